//! What a member pod reads from its environment, read through a lookup
//! function so that tests never touch the process's environment.
//!
//! | variable | set by | meaning |
//! |---|---|---|
//! | [`POD_NAME`](POD_NAME_ENV) | the operator's pod template (downward API) | this pod's name, as the ring names it |
//! | [`POD_NAMESPACE`](NAMESPACE_ENV) | the same | the namespace of the ring `ConfigMap` and of this Pod |
//! | [`LOCUS_RING_CONFIGMAP`](RING_CONFIGMAP_ENV) | the operator | the ring `ConfigMap`, `<service>-ring` |
//! | [`LOCUS_SERVICE`](SERVICE_ENV) | the operator | the `StatefulService`'s name (checked against the `ConfigMap`'s) |
//! | [`LOCUS_HANDOFF_SECRET_FILE`](SECRET_FILE_ENV) | the operator | the file holding the handoff secret |
//! | [`LOCUS_SNAPSHOT_DIR`](SNAPSHOT_DIR_ENV) | the operator, with `spec.snapshot` | the memory volume of fast restarts |
//! | [`LOCUS_LOAD_REPORT_INTERVAL`](LOAD_REPORT_INTERVAL_ENV) | the service's pod template, optional | time between [load reports](crate::load) (`15s`, `500ms`, `1m` or whole seconds; `0`: none; default 15 s) |
//! | [`LOCUS_MEMORY_LIMIT`](crate::store::MEMORY_LIMIT_ENV) | the operator, on containers with a memory limit | the limit in bytes; read by [`memory_limit`](crate::store::memory_limit), not by `MemberPod` (the store is built before it) |
//!
//! An empty value counts as unset.

use std::path::PathBuf;

pub use crate::handoff::SECRET_FILE_ENV;
pub use crate::load::LOAD_REPORT_INTERVAL_ENV;
pub use crate::progress::NAMESPACE_ENV;
pub use crate::server::POD_NAME_ENV;
pub use crate::snapshot::SNAPSHOT_DIR_ENV;

/// The ring `ConfigMap`'s name (`<service>-ring`).
pub const RING_CONFIGMAP_ENV: &str = "LOCUS_RING_CONFIGMAP";

/// The `StatefulService`'s name.
pub const SERVICE_ENV: &str = "LOCUS_SERVICE";

/// The variables of a member pod, as found (nothing checked yet: the
/// [builder](super::MemberPodBuilder) checks them with its overrides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PodEnv {
    /// [`POD_NAME_ENV`].
    pub pod: Option<String>,
    /// [`NAMESPACE_ENV`].
    pub namespace: Option<String>,
    /// [`RING_CONFIGMAP_ENV`].
    pub ring_config_map: Option<String>,
    /// [`SERVICE_ENV`].
    pub service: Option<String>,
    /// [`SECRET_FILE_ENV`].
    pub secret_file: Option<PathBuf>,
    /// [`SNAPSHOT_DIR_ENV`].
    pub snapshot_dir: Option<PathBuf>,
    /// [`LOAD_REPORT_INTERVAL_ENV`], unparsed.
    pub load_report_interval: Option<String>,
}

impl PodEnv {
    /// The variables `lookup` gives (`None`: unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        Self {
            pod: get(POD_NAME_ENV),
            namespace: get(NAMESPACE_ENV),
            ring_config_map: get(RING_CONFIGMAP_ENV),
            service: get(SERVICE_ENV),
            secret_file: get(SECRET_FILE_ENV).map(PathBuf::from),
            snapshot_dir: get(SNAPSHOT_DIR_ENV).map(PathBuf::from),
            load_report_interval: get(LOAD_REPORT_INTERVAL_ENV),
        }
    }

    /// The variables of this process.
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// Reads a duration as `LOCUS_LOAD_REPORT_INTERVAL` gives it: a whole number
/// with a unit (`ms`, `s`, `m`, `h`) or of seconds without one.
pub(super) fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn reads_what_the_operator_sets() {
        let env = PodEnv::from_lookup(lookup(&[
            ("POD_NAME", "carts-0-x7k2p"),
            ("POD_NAMESPACE", "shop"),
            ("LOCUS_RING_CONFIGMAP", "carts-ring"),
            ("LOCUS_SERVICE", "carts"),
            ("LOCUS_HANDOFF_SECRET_FILE", "/var/run/locus/handoff/key"),
            ("LOCUS_SNAPSHOT_DIR", "/var/run/locus/snapshot"),
            ("LOCUS_LOAD_REPORT_INTERVAL", "5s"),
            ("UNRELATED", "x"),
        ]));
        assert_eq!(
            env,
            PodEnv {
                pod: Some("carts-0-x7k2p".into()),
                namespace: Some("shop".into()),
                ring_config_map: Some("carts-ring".into()),
                service: Some("carts".into()),
                secret_file: Some("/var/run/locus/handoff/key".into()),
                snapshot_dir: Some("/var/run/locus/snapshot".into()),
                load_report_interval: Some("5s".into()),
            }
        );
    }

    #[test]
    fn intervals_read_with_or_without_a_unit() {
        use std::time::Duration;
        assert_eq!(parse_duration("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in [
            "",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "3d",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_values_are_unset() {
        let env = PodEnv::from_lookup(lookup(&[("POD_NAME", ""), ("LOCUS_SNAPSHOT_DIR", "")]));
        assert_eq!(env, PodEnv::default());
    }
}
