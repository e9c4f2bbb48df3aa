//! The command line, parsed by hand: `kubectl locus status <service> [flags]`.
//!
//! Flags take their value as the next argument or after `=` (`-n demo`, `--namespace=demo`);
//! the short ones also glued (`-ndemo`, `-ojson`), as kubectl accepts them. Anything else is a
//! [`UsageError`], which the binary prints with [`USAGE`] and exit code 2.

use std::path::PathBuf;

/// What `kubectl locus --help` prints.
pub const USAGE: &str = "\
Usage: kubectl locus status <service> [flags]

Shows a Locus StatefulService at a glance: its ring (version, phase, shards
per slot), its pods (readiness, restarts, node, IP, progress reports), the
last transition and what needs attention.

Flags:
  -n, --namespace NS     namespace of the service
                         (default: the kubeconfig context's namespace)
  -o, --output FORMAT    text (default) or json
      --kubeconfig PATH  kubeconfig file (default: $KUBECONFIG, then
                         ~/.kube/config, then the in-cluster account)
      --context NAME     kubeconfig context (default: the current one)
  -h, --help             show this help
      --version          show the plugin's version

Exit codes: 0 the status was shown (even with warnings), 1 it could not be
read (service not found, API server unreachable), 2 bad arguments.
";

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Sections and tables for an 80-column terminal.
    #[default]
    Text,
    /// One JSON object (field names in the [crate docs](crate)).
    Json,
}

/// The arguments of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusArgs {
    /// Name of the `StatefulService`.
    pub service: String,
    /// `-n`; `None`: the kubeconfig context's namespace.
    pub namespace: Option<String>,
    /// `-o`.
    pub output: OutputFormat,
    /// `--kubeconfig`; `None`: `kube::Config::infer` (honours `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// `--context`; `None`: the current context.
    pub context: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `status <service>`.
    Status(StatusArgs),
    /// `-h`, `--help`, `help`, or no arguments at all.
    Help,
    /// `--version`.
    Version,
}

/// A command line that does not parse; the message says which argument and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut args = args.into_iter().map(Into::into);
    let Some(first) = args.next() else {
        return Ok(Command::Help);
    };
    match first.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "--version" | "version" => return Ok(Command::Version),
        "status" => {}
        other if other.starts_with('-') => {
            return Err(usage(format!(
                "expected a command before the flag {other:?}: kubectl locus status <service>"
            )));
        }
        other => {
            return Err(usage(format!(
                "unknown command {other:?}: the only command is `status`"
            )));
        }
    }
    let mut service: Option<String> = None;
    let mut namespace = None;
    let mut output = OutputFormat::Text;
    let mut kubeconfig = None;
    let mut context = None;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if arg == "--" {
            for rest in args.by_ref() {
                set_service(&mut service, rest)?;
            }
            break;
        }
        let Some((flag, inline)) = split_flag(&arg) else {
            set_service(&mut service, arg)?;
            continue;
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| usage(format!("the flag {flag} needs a value")))?,
        };
        if value.is_empty() {
            return Err(usage(format!("the flag {flag} needs a non-empty value")));
        }
        match flag {
            Flag::Namespace => namespace = Some(value),
            Flag::Output => output = parse_output(&value)?,
            Flag::Kubeconfig => kubeconfig = Some(PathBuf::from(value)),
            Flag::Context => context = Some(value),
        }
    }
    let service = service.ok_or_else(|| {
        usage("missing the service name: kubectl locus status <service> [-n NAMESPACE]")
    })?;
    Ok(Command::Status(StatusArgs {
        service,
        namespace,
        output,
        kubeconfig,
        context,
    }))
}

fn set_service(service: &mut Option<String>, arg: String) -> Result<(), UsageError> {
    if arg.starts_with('-') {
        return Err(usage(format!("unknown flag {arg:?}")));
    }
    if let Some(first) = service {
        return Err(usage(format!(
            "one service at a time: got {first:?} and {arg:?}"
        )));
    }
    *service = Some(arg);
    Ok(())
}

/// The flags that take a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Namespace,
    Output,
    Kubeconfig,
    Context,
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Namespace => "-n/--namespace",
            Self::Output => "-o/--output",
            Self::Kubeconfig => "--kubeconfig",
            Self::Context => "--context",
        })
    }
}

const SHORT_FLAGS: [(&str, Flag); 2] = [("-n", Flag::Namespace), ("-o", Flag::Output)];
const LONG_FLAGS: [(&str, Flag); 4] = [
    ("--namespace", Flag::Namespace),
    ("--output", Flag::Output),
    ("--kubeconfig", Flag::Kubeconfig),
    ("--context", Flag::Context),
];

/// `Some((flag, value glued to it))` if `arg` is a known flag; `None` if it is not a flag
/// (a positional argument, or an unknown flag, which [`set_service`] refuses).
fn split_flag(arg: &str) -> Option<(Flag, Option<String>)> {
    for (name, flag) in LONG_FLAGS {
        if arg == name {
            return Some((flag, None));
        }
        if let Some(value) = arg.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some((flag, Some(value.to_owned())));
        }
    }
    let (name, flag) = SHORT_FLAGS.iter().find(|(name, _)| arg.starts_with(name))?;
    let rest = &arg[name.len()..];
    let value = rest.strip_prefix('=').unwrap_or(rest);
    Some((*flag, (!rest.is_empty()).then(|| value.to_owned())))
}

fn parse_output(value: &str) -> Result<OutputFormat, UsageError> {
    match value {
        "text" | "wide" => Ok(OutputFormat::Text),
        "json" => Ok(OutputFormat::Json),
        other => Err(usage(format!(
            "unsupported output format {other:?}: use -o json or -o text"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(args: &[&str]) -> StatusArgs {
        match parse(args.iter().copied()) {
            Ok(Command::Status(s)) => s,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Err(UsageError(message)) => message,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn the_service_alone_uses_the_defaults() {
        assert_eq!(
            status(&["status", "ledger"]),
            StatusArgs {
                service: "ledger".into(),
                namespace: None,
                output: OutputFormat::Text,
                kubeconfig: None,
                context: None,
            }
        );
    }

    #[test]
    fn flags_take_their_value_separately_glued_or_after_an_equals_sign() {
        for args in [
            &["status", "ledger", "-n", "demo", "-o", "json"][..],
            &["status", "-n", "demo", "ledger", "--output", "json"],
            &["status", "-ndemo", "-ojson", "ledger"],
            &["status", "-n=demo", "-o=json", "ledger"],
            &["status", "--namespace=demo", "--output=json", "ledger"],
            &["status", "--namespace", "demo", "ledger", "-o", "json"],
        ] {
            let parsed = status(args);
            assert_eq!(parsed.service, "ledger", "{args:?}");
            assert_eq!(parsed.namespace.as_deref(), Some("demo"), "{args:?}");
            assert_eq!(parsed.output, OutputFormat::Json, "{args:?}");
        }
        let parsed = status(&[
            "status",
            "ledger",
            "--kubeconfig",
            "/tmp/k",
            "--context=kind",
        ]);
        assert_eq!(parsed.kubeconfig, Some(PathBuf::from("/tmp/k")));
        assert_eq!(parsed.context.as_deref(), Some("kind"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(Vec::<String>::new()), Ok(Command::Help));
        assert_eq!(parse(["--help"]), Ok(Command::Help));
        assert_eq!(parse(["status", "-h"]), Ok(Command::Help));
        assert_eq!(parse(["--version"]), Ok(Command::Version));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        assert!(error(&["stats", "ledger"]).contains("unknown command \"stats\""));
        assert!(error(&["-n", "demo"]).contains("expected a command"));
        assert!(error(&["status"]).contains("missing the service name"));
        assert!(error(&["status", "a", "b"]).contains("one service at a time"));
        assert!(error(&["status", "ledger", "-n"]).contains("-n/--namespace needs a value"));
        assert!(error(&["status", "ledger", "--namespace="]).contains("non-empty"));
        assert!(error(&["status", "ledger", "-o", "yaml"]).contains("\"yaml\""));
        assert!(error(&["status", "ledger", "--watch"]).contains("unknown flag \"--watch\""));
        assert!(error(&["status", "ledger", "--namespacex"]).contains("unknown flag"));
    }

    #[test]
    fn a_double_dash_ends_the_flags() {
        assert_eq!(
            status(&["status", "-n", "x", "--", "ledger"]).service,
            "ledger"
        );
    }

    #[test]
    fn the_usage_fits_80_columns() {
        assert!(USAGE.lines().all(|l| l.chars().count() <= 80));
    }
}
