//! Container logs kept by the local cluster's node agent.

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
    fn the_log_path_names_the_pod() {
        assert_eq!(
            container_log(Path::new("/run"), "ns", "p", "u", "c"),
            PathBuf::from("/run/pods/ns_p_u/c.log")
        );
    }
}
