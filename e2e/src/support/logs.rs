//! Container logs kept by the local cluster's node agent, and the last lines of a log file
//! for error messages.

use std::path::{Path, PathBuf};

/// The log file of `container` in pod `namespace/pod` (UID `uid`) under the node agent's run
/// directory; the agent keeps it after the pod ends.
pub fn container_log(
    node_run_dir: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    node_run_dir
        .join("pods")
        .join(format!("{namespace}_{pod}_{uid}"))
        .join(format!("{container}.log"))
}

/// The last `lines` lines of a log file, for error messages (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `raw` without terminal colour codes.
pub fn strip_ansi(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m done"),
            "2026  INFO done"
        );
    }

    #[test]
    fn the_tail_is_the_last_lines() {
        let path = std::env::temp_dir().join(format!("locus-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&path, 9), "a\nb\nc");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(tail(&path, 2), "");
    }

    #[test]
    fn the_log_path_names_the_pod() {
        assert_eq!(
            container_log(Path::new("/run"), "ns", "p", "u", "c"),
            PathBuf::from("/run/pods/ns_p_u/c.log")
        );
    }
}
