//! A small command-line reader shared by the two binaries: `--flag value`
//! or `--flag=value`, with typed values and environment fallbacks.
//!
//! ```
//! use locus_examples::args::Args;
//!
//! let mut args = Args::new(["--sessions=10", "--json", "--rate", "5.5"]);
//! let mut seen = Vec::new();
//! while let Some(flag) = args.next_flag().unwrap() {
//!     match flag.as_str() {
//!         "--sessions" => seen.push(args.value::<u32>(&flag).unwrap().to_string()),
//!         "--rate" => seen.push(args.value::<f64>(&flag).unwrap().to_string()),
//!         "--json" => seen.push("json".into()),
//!         other => panic!("unexpected {other}"),
//!     }
//! }
//! assert_eq!(seen, ["10", "json", "5.5"]);
//! ```

use std::collections::VecDeque;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// The remaining command-line arguments.
#[derive(Debug, Clone)]
pub struct Args {
    items: VecDeque<String>,
    /// The value of the last `--flag=value`, waiting for [`Args::value`].
    inline: Option<String>,
}

impl Args {
    /// Arguments from a list (without the program name).
    pub fn new<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            items: items.into_iter().map(Into::into).collect(),
            inline: None,
        }
    }

    /// The process's arguments.
    pub fn from_env() -> Self {
        Self::new(std::env::args().skip(1))
    }

    /// The next flag, or `None` at the end. Refuses a positional argument
    /// and a flag given `=value` whose value was not read.
    pub fn next_flag(&mut self) -> Result<Option<String>, Error> {
        if let Some(value) = self.inline.take() {
            return Err(Error::config(value, "unexpected value"));
        }
        let Some(item) = self.items.pop_front() else {
            return Ok(None);
        };
        if !item.starts_with("--") {
            return Err(Error::config(item, "expected a --flag"));
        }
        match item.split_once('=') {
            Some((flag, value)) => {
                self.inline = Some(value.to_owned());
                Ok(Some(flag.to_owned()))
            }
            None => Ok(Some(item)),
        }
    }

    /// The value of `flag` as text.
    pub fn text(&mut self, flag: &str) -> Result<String, Error> {
        self.inline
            .take()
            .or_else(|| self.items.pop_front())
            .ok_or_else(|| Error::config(flag, "needs a value"))
    }

    /// The value of `flag`, parsed.
    pub fn value<T>(&mut self, flag: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text = self.text(flag)?;
        parse(flag, &text)
    }

    /// The value of `flag` as a duration (see [`parse_duration`]).
    pub fn duration(&mut self, flag: &str) -> Result<Duration, Error> {
        let text = self.text(flag)?;
        parse_duration(&text).map_err(|reason| Error::config(flag, reason))
    }
}

/// Parses `text` as the value of `what`.
pub fn parse<T>(what: &str, text: &str) -> Result<T, Error>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse()
        .map_err(|e| Error::config(what, format!("{text:?}: {e}")))
}

/// Parses `500ms`, `30s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 30s, 5m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// The environment variable `name`, if set and not empty.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn flags_values_and_mistakes() {
        let mut args = Args::new(["--a", "1", "--b=x", "stray"]);
        assert_eq!(args.next_flag().unwrap().as_deref(), Some("--a"));
        assert_eq!(args.value::<u8>("--a").unwrap(), 1);
        assert_eq!(args.next_flag().unwrap().as_deref(), Some("--b"));
        assert!(args.value::<u8>("--b").is_err());
        assert!(args.next_flag().is_err());

        // A `=value` nobody read is refused rather than ignored.
        let mut args = Args::new(["--json=yes"]);
        assert_eq!(args.next_flag().unwrap().as_deref(), Some("--json"));
        assert!(args.next_flag().is_err());

        let mut args = Args::new(["--a"]);
        args.next_flag().unwrap();
        assert!(args.text("--a").is_err());
    }
}
