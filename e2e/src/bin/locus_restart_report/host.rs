//! Facts about the machine the run is on, for the report.

use std::path::Path;

/// `/proc/loadavg`'s three averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |t| t.split_whitespace().take(3).collect::<Vec<_>>().join("/"),
    )
}

/// The file system type `path` lives on (the longest matching mount point).
pub(crate) fn fs_type(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _device = f.next()?;
            let point = f.next()?;
            let kind = f.next()?;
            path.starts_with(point)
                .then(|| (point.len(), format!("{kind}:{point}")))
        })
        .max()
        .map_or_else(|| "?".to_owned(), |(_, k)| k)
}

/// Facts about the machine, for the report.
pub(crate) fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or_else(
            || "?".to_owned(),
            |kb| format!("{:.1}", kb / 1024.0 / 1024.0),
        );
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or("?", |v| v.trim_matches('"'))
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |k| k.trim().to_owned());
    vec![
        format!(
            "cpus={}",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
        ),
        format!("cpu={model:?}"),
        format!("mem_gib={mem_gib}"),
        format!("os={os:?}"),
        format!("kernel={kernel}"),
    ]
}
