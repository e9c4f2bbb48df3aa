//! The memory limit of the container a pod runs in, and store bounds that fit inside it.
//!
//! A session store holds its sessions in the pod's memory; under a container memory limit
//! the default bounds (256 MiB of sessions, 100 000 of them) can be more than the limit, and
//! the kernel then kills the process (OOM) with every session in it. [`memory_limit`] finds
//! the limit; [`LimitsBuilder::within_memory`](super::LimitsBuilder::within_memory) derives
//! the store's bounds from it, so a full store refuses new sessions with 503 + `Retry-After`
//! (or evicts idle ones to its persistence) long before the kernel steps in.
//!
//! Where the limit comes from, first found wins:
//!
//! 1. [`MEMORY_LIMIT_ENV`] (`LOCUS_MEMORY_LIMIT`), a number of bytes. The operator sets it
//!    from the container's `resources.limits.memory` through the downward API
//!    (`resourceFieldRef`) on every container that declares a memory limit.
//! 2. The cgroup the process runs in: `memory.max` (cgroup v2) or `memory.limit_in_bytes`
//!    (cgroup v1) under `/sys/fs/cgroup`, as a container runtime mounts them. "max", or a
//!    v1 value of 2^60 or more, means no limit.
//!
//! The budget ([`MemoryBudget`]) leaves room for what is not session state: half of the limit
//! for the sessions' weighed bytes, a quarter for their index (at
//! [`SESSION_OVERHEAD_BYTES`] each, which bounds the session count), and a quarter for the
//! runtime, connections, handoff and snapshot buffers. The fractions are a start that held
//! under load on a real node (see `docs/session-store.md`); services whose weigher
//! undercounts should pass a smaller limit.

use std::path::Path;

/// The variable the operator sets to the container's memory limit, in bytes.
pub const MEMORY_LIMIT_ENV: &str = "LOCUS_MEMORY_LIMIT";

/// The memory one resident session costs beyond its weighed bytes: its index entry (hash
/// map slot, recency order, shard index, the shared entry and its lock, key copies) and what
/// the allocator keeps around it under eviction churn. Measured on a real node: the sample at
/// 65 536 resident sessions (31 MB weighed) used 112 MB, about 1.5 KiB per session of which
/// 0.47 KiB weighed (`e2e/tests/e2e_memory_limit.rs`, `docs/session-store.md`). The shard
/// index (resident keys ordered by ring hash), added since, costs about 42 bytes per session
/// at 1 M sessions, within the index's ≈ 550 bytes measured there without churn
/// (`shard_index_report`, `docs/benchmarks.md`); the budget keeps the 1 KiB.
pub const SESSION_OVERHEAD_BYTES: u64 = 1024;

/// cgroup v1 reports "no limit" as a page-aligned value near 2^63; anything this large is
/// not a limit a container was given.
const UNLIMITED_V1: u64 = 1 << 60;

/// The memory limit of this process's container, in bytes, if it has one: from
/// [`MEMORY_LIMIT_ENV`], else from the cgroup files. Reads two small files; call it at
/// start-up, not on a request path.
pub fn memory_limit() -> Option<u64> {
    memory_limit_from(
        std::env::var(MEMORY_LIMIT_ENV).ok().as_deref(),
        Path::new("/sys/fs/cgroup"),
    )
}

/// [`memory_limit`] from a given environment value and cgroup mount point.
pub fn memory_limit_from(env: Option<&str>, cgroup_root: &Path) -> Option<u64> {
    if let Some(limit) = env.and_then(parse_env) {
        return Some(limit);
    }
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    if let Some(v2) = read(&cgroup_root.join("memory.max")) {
        return parse_v2(&v2);
    }
    read(&cgroup_root.join("memory/memory.limit_in_bytes")).and_then(|v1| parse_v1(&v1))
}

fn parse_env(value: &str) -> Option<u64> {
    match value.trim().parse::<u64>() {
        Ok(0) => None,
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(
                variable = MEMORY_LIMIT_ENV,
                value,
                %error,
                "not a number of bytes; looking for the limit in the cgroup"
            );
            None
        }
    }
}

fn parse_v2(value: &str) -> Option<u64> {
    match value.trim() {
        "max" => None,
        limit => limit.parse().ok().filter(|&l| l > 0),
    }
}

fn parse_v1(value: &str) -> Option<u64> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|&l| l > 0 && l < UNLIMITED_V1)
}

/// How a memory limit is shared out; see the `memory` module's docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Most weighed bytes of all resident sessions.
    pub session_bytes: usize,
    /// Most resident sessions.
    pub sessions: usize,
}

impl MemoryBudget {
    /// The budget of a container limited to `limit` bytes.
    pub fn of(limit: u64) -> Self {
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            session_bytes: to_usize(limit / 2).max(1),
            sessions: to_usize(limit / 4 / SESSION_OVERHEAD_BYTES).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out like a cgroup mount, removed when dropped.
    struct Root(std::path::PathBuf);

    impl Root {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn cgroup(files: &[(&str, &str)]) -> Root {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("locus-cgroup-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        Root(dir)
    }

    #[test]
    fn the_variable_wins_over_the_cgroup() {
        let root = cgroup(&[("memory.max", "1000\n")]);
        assert_eq!(
            memory_limit_from(Some("134217728"), root.path()),
            Some(134_217_728)
        );
        assert_eq!(memory_limit_from(None, root.path()), Some(1000));
    }

    #[test]
    fn a_bad_or_zero_variable_falls_back_to_the_cgroup() {
        let root = cgroup(&[("memory.max", "4096\n")]);
        assert_eq!(memory_limit_from(Some("128Mi"), root.path()), Some(4096));
        assert_eq!(memory_limit_from(Some("0"), root.path()), Some(4096));
    }

    #[test]
    fn cgroup_v2_max_is_no_limit() {
        let root = cgroup(&[("memory.max", "max\n")]);
        assert_eq!(memory_limit_from(None, root.path()), None);
    }

    #[test]
    fn cgroup_v1_limits_and_its_unlimited_value() {
        let root = cgroup(&[("memory/memory.limit_in_bytes", "268435456\n")]);
        assert_eq!(memory_limit_from(None, root.path()), Some(268_435_456));
        let root = cgroup(&[("memory/memory.limit_in_bytes", "9223372036854771712\n")]);
        assert_eq!(memory_limit_from(None, root.path()), None);
    }

    #[test]
    fn no_files_no_limit() {
        let root = cgroup(&[]);
        assert_eq!(memory_limit_from(None, root.path()), None);
    }

    #[test]
    fn the_budget_shares_the_limit_out() {
        let budget = MemoryBudget::of(128 << 20);
        assert_eq!(budget.session_bytes, 64 << 20);
        assert_eq!(budget.sessions, (32 << 20) / 1024);
        assert_eq!(
            MemoryBudget::of(1),
            MemoryBudget {
                session_bytes: 1,
                sessions: 1
            }
        );
    }
}
