//! The text output: [`text`] lays a [`StatusReport`] out in sections for a terminal of a
//! given width (80 columns by default), and [`json`] encodes it for `-o json`.
//!
//! Tables size each column to its content; when a table is wider than the terminal, the
//! widest shrinkable column (pod and node names, reasons, messages) gives up a column at a
//! time down to its minimum. Names are cut in the middle, keeping their tail
//! (`<service>-<slot>-<hash>`: the end is what tells pods apart), reasons at the end; every
//! cut shows `…`. Condition messages and warnings wrap at words instead, so nothing of them is
//! lost.
//!
//! Why about 660 lines: one section renderer per part of the report, each a few dozen lines,
//! plus the table layout they share; splitting the sections from each other would only move
//! their shared column definitions apart.

use std::fmt::Write as _;

use locus_contract::crd::BalanceMode;
use locus_contract::ring::Phase as RingPhase;

use crate::report::{PodRow, SlotRow, StatusReport, TransitionSummary};

/// The width [`text`] lays out for when the terminal's is unknown.
pub const DEFAULT_WIDTH: usize = 80;

/// Columns between two table columns.
const GAP: usize = 2;

/// How a column's cells are cut when it shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Never shrinks.
    Fixed,
    /// Cut in the middle, keeping the tail (names).
    Middle,
    /// Cut at the end (prose).
    End,
    /// Wrapped at words over as many lines as it takes (prose in the last column).
    Wrap,
}

/// One column of a [`Table`].
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its header.
    pub header: &'static str,
    /// Right-aligned (numbers).
    pub right: bool,
    /// How it shrinks.
    pub cut: Cut,
    /// Narrowest it shrinks to.
    pub min: usize,
}

impl Column {
    /// A left-aligned column that never shrinks.
    pub const fn left(header: &'static str) -> Self {
        Self {
            header,
            right: false,
            cut: Cut::Fixed,
            min: 0,
        }
    }

    /// A right-aligned column that never shrinks.
    pub const fn right(header: &'static str) -> Self {
        Self {
            header,
            right: true,
            cut: Cut::Fixed,
            min: 0,
        }
    }

    /// A left-aligned column that shrinks down to `min`, cut as `cut` says.
    pub const fn shrinking(header: &'static str, cut: Cut, min: usize) -> Self {
        Self {
            header,
            right: false,
            cut,
            min,
        }
    }
}

/// A table: a header line and rows of cells, laid out by [`Table::render`].
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: Vec<Column>) -> Self {
        Self {
            columns,
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones ignored).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The column widths for a terminal `width` columns wide.
    fn widths(&self, width: usize) -> Vec<usize> {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|cell| chars(cell))
                    .chain([chars(c.header)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
        while total(&widths) > width {
            let widest = self
                .columns
                .iter()
                .zip(&widths)
                .enumerate()
                .filter(|(_, (c, w))| c.cut != Cut::Fixed && **w > c.min.max(chars(c.header)))
                .max_by_key(|(i, (_, w))| (**w, std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            let Some(i) = widest else { break };
            widths[i] -= 1;
        }
        widths
    }

    /// The table's lines, at most `width` columns each when the columns' minimums allow.
    pub fn render(&self, width: usize) -> Vec<String> {
        let widths = self.widths(width);
        let headers: Vec<String> = self.columns.iter().map(|c| c.header.to_owned()).collect();
        let mut lines = Vec::new();
        for cells in std::iter::once(&headers).chain(&self.rows) {
            // Each cell as its lines: one, or more for a wrapped one.
            let cells: Vec<Vec<String>> = self
                .columns
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (column, &w))| {
                    let cell = cells.get(i).map_or("", String::as_str);
                    match column.cut {
                        Cut::Fixed | Cut::Middle => vec![truncate_middle(cell, w)],
                        Cut::End => vec![truncate_end(cell, w)],
                        Cut::Wrap => wrap(cell, w, "", ""),
                    }
                })
                .collect();
            let height = cells.iter().map(Vec::len).max().unwrap_or(1);
            for row in 0..height {
                let mut line = String::new();
                for (i, (column, &w)) in self.columns.iter().zip(&widths).enumerate() {
                    let cell = cells[i].get(row).map_or("", String::as_str);
                    if i > 0 {
                        line.push_str(&" ".repeat(GAP));
                    }
                    let pad = " ".repeat(w.saturating_sub(chars(cell)));
                    if column.right {
                        line.push_str(&pad);
                        line.push_str(cell);
                    } else {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                }
                lines.push(line.trim_end().to_owned());
            }
        }
        lines
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// `text` in at most `width` characters: cut in the middle with `…`, keeping more of the
/// tail (at least 8 characters of it when there is room, the part that tells pods apart).
pub fn truncate_middle(text: &str, width: usize) -> String {
    let n = chars(text);
    if n <= width {
        return text.to_owned();
    }
    if width <= 1 {
        return "…".chars().take(width).collect();
    }
    let keep = width - 1;
    let tail = keep.div_ceil(2).max(keep.min(8));
    let head = keep - tail;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(n - tail));
    out
}

/// `text` in at most `width` characters: cut at the end with `…`.
pub fn truncate_end(text: &str, width: usize) -> String {
    if chars(text) <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

/// `text` wrapped at word boundaries into lines of at most `width` characters, the first
/// starting with `first`, the others with `rest` (both counted in the width). A word longer
/// than a line is cut across lines.
pub fn wrap(text: &str, width: usize, first: &str, rest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first.to_owned();
    // No word on `line` yet.
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut word = word;
        loop {
            let used = chars(&line) + usize::from(!empty);
            if used + chars(word) <= width {
                if !empty {
                    line.push(' ');
                }
                line.push_str(word);
                empty = false;
                break;
            }
            if !empty {
                lines.push(std::mem::replace(&mut line, rest.to_owned()));
                empty = true;
                continue;
            }
            // Alone on its line and still too long: cut it.
            let room = width.saturating_sub(chars(&line)).max(1);
            let at = word.char_indices().nth(room).map_or(word.len(), |(i, _)| i);
            line.push_str(&word[..at]);
            word = &word[at..];
            lines.push(std::mem::replace(&mut line, rest.to_owned()));
            if word.is_empty() {
                break;
            }
        }
    }
    if !empty || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A duration for people: `4.2s`, `42s`, `3m05s`, `2h10m`, `3d4h`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_owned();
    }
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    #[allow(
        clippy::cast_sign_loss,
        reason = "a finite, non-negative duration in seconds"
    )]
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "ages in seconds, far below 2^52"
)]
fn age(seconds: i64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        _ => human_duration(seconds as f64),
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn version(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A label column, then the value (wrapped, aligned under itself).
fn field(out: &mut String, label: &str, value: &str, width: usize) {
    let label = format!("{label:<17}");
    for line in wrap(value, width, &label, &" ".repeat(17)) {
        let _ = writeln!(out, "{line}");
    }
}

fn in_transition(report: &StatusReport) -> bool {
    report
        .ring
        .as_ref()
        .is_some_and(|r| r.phase != RingPhase::Stable)
}

fn header(report: &StatusReport, out: &mut String, width: usize) {
    field(
        out,
        "StatefulService",
        &format!("{}/{}", report.namespace, report.service),
        width,
    );
    let ring = match &report.ring {
        Some(ring) => {
            let mut text = format!(
                "version {} ({}), {} shards",
                ring.version, ring.phase, ring.shards
            );
            if let Some(age) = ring.age_seconds {
                let _ = write!(text, ", published {} ago", self::age(age));
            }
            text
        }
        None => "none (see Warnings)".to_owned(),
    };
    field(out, "Ring", &ring, width);
    let phase = match (report.phase, &report.last_transition) {
        (None, _) => "unknown (no status yet)".to_owned(),
        (Some(phase), Some(t)) if t.in_progress => format!(
            "{phase:?}: {:?} from ring version {}, running for {}",
            t.kind,
            t.from_version,
            took(t)
        ),
        (Some(phase), _) => format!("{phase:?}"),
    };
    field(out, "Phase", &phase, width);
    let replicas = &report.replicas;
    let counts = match (replicas.ready, replicas.active) {
        (Some(ready), Some(active)) => format!(
            "{} desired, {ready} ready, {active} holding shards",
            replicas.desired
        ),
        _ => format!("{} desired (no status yet)", replicas.desired),
    };
    field(out, "Replicas", &counts, width);
    match (&report.revision.current, &report.revision.update) {
        (Some(current), Some(update)) if current != update => field(
            out,
            "Revision",
            &format!("{current} -> {update} (rolling out)"),
            width,
        ),
        (_, Some(update)) => field(out, "Revision", update, width),
        (Some(current), None) => field(out, "Revision", current, width),
        (None, None) => {}
    }
}

/// The SHARDS cell: the current count, or `old->new` while a transition changes it.
fn shards_cell(slot: &SlotRow) -> String {
    match (slot.target_shards, slot.previous_shards) {
        (Some(target), _) if target != slot.shards => format!("{}->{target}", slot.shards),
        (_, Some(previous)) if previous != slot.shards => format!("{previous}->{}", slot.shards),
        _ => slot.shards.to_string(),
    }
}

fn slots(report: &StatusReport, out: &mut String, width: usize) {
    let Some(ring) = &report.ring else { return };
    let transition = in_transition(report);
    let mut columns = vec![
        Column::left("SLOT"),
        Column::shrinking("POD", Cut::Middle, 12),
        Column::left("STATE"),
        Column::left("READY"),
        Column::right("SHARDS"),
        Column::right("SHARE"),
    ];
    if transition {
        columns.extend([
            Column::right("OBS"),
            Column::right("WARM"),
            Column::right("DRAIN"),
        ]);
    }
    let mut table = Table::new(columns);
    let pod = |name: &str| report.pods.iter().find(|p| p.name == name);
    let progress = |name: &str| -> Vec<String> {
        let p = pod(name).map(|p| p.progress).unwrap_or_default();
        vec![version(p.observed), version(p.warmed), version(p.drained)]
    };
    let ready = |name: &str| yes_no(pod(name).is_some_and(|p| p.ready));
    for slot in &report.slots {
        let mut cells = vec![
            slot.index.to_string(),
            slot.pod.clone(),
            slot.state.to_string(),
            yes_no(slot.ready),
            shards_cell(slot),
            format!("{:.1}%", slot.share_percent),
        ];
        if transition {
            cells.extend(progress(&slot.pod));
        }
        table.row(cells);
        for (other, role) in [
            (&slot.successor, "successor"),
            (&slot.predecessor, "predecessor"),
        ] {
            if let Some(name) = other {
                let mut cells = vec![
                    slot.index.to_string(),
                    name.clone(),
                    role.to_owned(),
                    ready(name),
                    String::new(),
                    String::new(),
                ];
                if transition {
                    cells.extend(progress(name));
                }
                table.row(cells);
            }
        }
    }
    let _ = writeln!(out, "\nSlots");
    for line in table.render(width) {
        let _ = writeln!(out, "{line}");
    }
    if transition {
        let legend = format!(
            "SHARDS old->new: the shards this step moves. OBS, WARM, DRAIN: the ring versions each pod reported observed, warmed and drained; this {} step waits for reports of version {}.",
            ring.phase, ring.version
        );
        for line in wrap(&legend, width, "", "") {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn pod_status(pod: &PodRow) -> String {
    if pod.terminating {
        "Terminating".to_owned()
    } else {
        pod.phase.clone().unwrap_or_else(|| "Unknown".to_owned())
    }
}

/// Each pod's report of the sessions it took over in the last finished transition: its state
/// and warm/cold counts.
fn pod_reports(report: &StatusReport, out: &mut String, width: usize) {
    let mut table = Table::new(vec![
        Column::shrinking("POD", Cut::Middle, 12),
        Column::left("REPORT"),
        Column::right("WARM"),
        Column::right("COLD"),
        Column::right("ABSENT"),
        Column::right("ROLLED-FWD"),
        Column::right("FENCED-LOAD"),
    ]);
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    for pod in &report.pods {
        let m = pod.moved_sessions.as_ref();
        table.row(vec![
            pod.name.clone(),
            pod.moved_report.as_str().to_owned(),
            count(m.map(|m| m.warm.total)),
            count(m.map(|m| m.cold.total)),
            count(m.map(|m| m.cold.absent)),
            count(m.map(|m| m.cold.rolled_forward)),
            count(m.map(|m| m.cold.fenced_load)),
        ]);
    }
    for line in table.render(width) {
        let _ = writeln!(out, "{line}");
    }
}

fn pods(report: &StatusReport, out: &mut String, width: usize) {
    let _ = writeln!(out, "\nPods");
    if report.pods.is_empty() {
        let _ = writeln!(out, "(none)");
        return;
    }
    let mut table = Table::new(vec![
        Column::shrinking("POD", Cut::Middle, 12),
        Column::left("SLOT"),
        Column::left("STATUS"),
        Column::left("READY"),
        Column::right("RESTARTS"),
        Column::left("AGE"),
        Column::shrinking("NODE", Cut::Middle, 6),
        Column::shrinking("IP", Cut::Middle, 9),
    ]);
    for pod in &report.pods {
        table.row(vec![
            pod.name.clone(),
            pod.slot.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            pod_status(pod),
            yes_no(pod.ready),
            pod.restarts.to_string(),
            pod.age_seconds.map_or_else(|| "-".to_owned(), age),
            pod.node.clone().unwrap_or_else(|| "-".to_owned()),
            pod.ip.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    for line in table.render(width) {
        let _ = writeln!(out, "{line}");
    }
}

fn conditions(report: &StatusReport, out: &mut String, width: usize) {
    if report.conditions.is_empty() {
        return;
    }
    let mut table = Table::new(vec![
        Column::left("TYPE"),
        Column::left("STATUS"),
        Column::shrinking("REASON", Cut::End, 12),
        Column::left("SINCE"),
        Column::shrinking("MESSAGE", Cut::Wrap, 20),
    ]);
    for c in &report.conditions {
        table.row(vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            age(c.since_seconds),
            c.message.clone(),
        ]);
    }
    let _ = writeln!(out, "\nConditions");
    for line in table.render(width) {
        let _ = writeln!(out, "{line}");
    }
}

/// How long a transition took, or has been running. The status records its times to the
/// second, so a transition within one second shows as `under 1s`.
fn took(t: &TransitionSummary) -> String {
    match t.duration_seconds {
        None => "?".to_owned(),
        Some(d) if d < 1.0 => "under 1s".to_owned(),
        // Whole seconds since the start.
        Some(d) if t.in_progress => age(d as i64),
        Some(d) => human_duration(d),
    }
}

/// The warm-hit figure: the operator's, only once every pod reported final counts; else
/// what holds it back.
fn warm_hit(t: &TransitionSummary) -> String {
    let Some(m) = t.moved_sessions.as_ref() else {
        return "pending (no report summed yet)".to_owned();
    };
    if m.r#final {
        return match t.warm_hit_percent {
            Some(percent) => format!(
                "{percent:.1}% of {} moved sessions (final reports of {} pods)",
                m.warm.total.saturating_add(m.cold.total),
                m.pods_expected
            ),
            None => format!(
                "no session moved (final reports of {} pods)",
                m.pods_expected
            ),
        };
    }
    if t.reports.as_deref() == Some("ReportsMissing") && !m.missing.is_empty() {
        return format!("reports missing: {}", m.missing.join(", "));
    }
    format!(
        "pending ({} of {} pods final)",
        m.pods_reported, m.pods_expected
    )
}

fn last_transition(report: &StatusReport, out: &mut String, width: usize) {
    let Some(t) = &report.last_transition else {
        return;
    };
    let _ = writeln!(out);
    field(
        out,
        "Last transition",
        &format!(
            "{:?}, ring version {} -> {}, {} shards moved",
            t.kind, t.from_version, t.to_version, t.shards_moved
        ),
        width,
    );
    let when = match t.finished_seconds_ago {
        _ if t.in_progress => format!("running for {}", took(t)),
        Some(ago) => format!("{}, finished {} ago", took(t), age(ago)),
        None => took(t),
    };
    field(out, "Duration", &when, width);
    if !t.in_progress {
        field(out, "Warm hit", &warm_hit(t), width);
    }
    if let Some(m) = t.moved_sessions.as_ref().filter(|_| !t.in_progress) {
        let (w, c) = (&m.warm, &m.cold);
        field(
            out,
            "Moved sessions",
            &format!("warm {} ({w}), cold {} ({c})", w.total, c.total),
            width,
        );
    }
    if !t.in_progress && !report.pods.is_empty() {
        pod_reports(report, out, width);
    }
    if let Some(ring) = report.ring.as_ref().filter(|r| !r.timed_out.is_empty()) {
        field(
            out,
            "Timed out",
            &format!("{} (rolled forward)", ring.timed_out.join(", ")),
            width,
        );
    }
}

/// Requests or bytes per second, short: `950.5`, `12.3k`, `4.1M`.
fn rate(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v >= 1e6 => format!("{:.1}M", v / 1e6),
        Some(v) if v >= 1e4 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.1}"),
    }
}

fn placement(report: &StatusReport, out: &mut String, width: usize) {
    let Some(p) = &report.placement else {
        return;
    };
    let _ = writeln!(out, "\nPlacement");
    let mut mode = format!("{:?}", p.mode);
    if p.mode == BalanceMode::Load {
        let _ = write!(
            mode,
            " (trigger {}%, target {}% of the mean)",
            p.trigger_percent, p.target_percent
        );
    }
    field(out, "Balance", &mode, width);
    if let Some(busiest) = p.busiest_percent {
        field(
            out,
            "Busiest pod",
            &format!("{busiest}% of the mean"),
            width,
        );
    }
    if let Some(held) = &p.trigger_held {
        field(
            out,
            "Trigger held",
            &format!(
                "{}% in the last windows of ring version {}: a rebalance starts if the next confirm it",
                held.busiest_percent, held.ring_version
            ),
            width,
        );
    }
    if let Some(message) = &p.message {
        field(out, "Message", message, width);
    }
    let last = match (&p.last_rebalance, p.last_rebalance_seconds_ago) {
        (None, _) => "none".to_owned(),
        (Some(r), ago) => format!(
            "{} ago, from ring version {}: {} shards moved, busiest {}% -> {}% predicted",
            ago.map_or_else(|| "?".to_owned(), age),
            r.from_version,
            r.shards_moved,
            r.busiest_percent_before,
            r.busiest_percent_predicted
        ),
    };
    field(out, "Last rebalance", &last, width);
    if !p.hot_shards.is_empty() {
        let hot: Vec<String> = p
            .hot_shards
            .iter()
            .map(|h| {
                format!(
                    "{} on slot {} ({} req/s, {}% of the mean)",
                    h.shard,
                    h.slot,
                    rate(Some(h.requests_per_second)),
                    h.percent_of_mean
                )
            })
            .collect();
        field(out, "Hot shards", &hot.join(", "), width);
    }
    if p.pods.is_empty() {
        return;
    }
    let mut table = Table::new(vec![
        Column::left("SLOT"),
        Column::shrinking("POD", Cut::Middle, 12),
        Column::right("REQ/S"),
        Column::right("BYTES/S"),
        Column::right("RING"),
        Column::shrinking("PROBLEM", Cut::Wrap, 16),
    ]);
    for pod in &p.pods {
        table.row(vec![
            pod.slot.to_string(),
            pod.pod.clone(),
            rate(pod.requests_per_second),
            rate(pod.bytes_per_second),
            version(pod.ring_version),
            pod.problem.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    for line in table.render(width) {
        let _ = writeln!(out, "{line}");
    }
}

fn warnings(report: &StatusReport, out: &mut String, width: usize) {
    let _ = writeln!(out, "\nWarnings");
    if report.warnings.is_empty() {
        let _ = writeln!(out, "(none)");
    }
    for warning in &report.warnings {
        for line in wrap(&warning.message, width, "- ", "  ") {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The report as text for a terminal `width` columns wide: header, slots, pods, conditions,
/// last transition, placement (when not by key count), warnings.
pub fn text(report: &StatusReport, width: usize) -> String {
    let mut out = String::new();
    header(report, &mut out, width);
    slots(report, &mut out, width);
    pods(report, &mut out, width);
    conditions(report, &mut out, width);
    last_transition(report, &mut out, width);
    placement(report, &mut out, width);
    warnings(report, &mut out, width);
    out
}

/// The report as one JSON object (pretty, ending with a newline).
pub fn json(report: &StatusReport) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::build;
    use crate::report::tests::{config_map, now, pod, ring_json, stable};

    fn assert_fits(text: &str, width: usize) {
        for line in text.lines() {
            assert!(
                chars(line) <= width,
                "{} columns: {line:?}\n{text}",
                chars(line)
            );
        }
    }

    #[test]
    fn a_stable_service_reads_as_sections() {
        let text = text(&build(&stable(), now()), DEFAULT_WIDTH);
        assert_fits(&text, 80);
        let expected = "\
StatefulService  demo/ledger
Ring             version 3 (stable), 8 shards, published 50s ago
Phase            Stable
Replicas         2 desired, 2 ready, 2 holding shards
Revision         abc

Slots
SLOT  POD             STATE   READY  SHARDS  SHARE
0     ledger-0-aaaaa  active  yes         5  62.5%
1     ledger-1-bbbbb  active  yes         3  37.5%

Pods
POD             SLOT  STATUS   READY  RESTARTS  AGE    NODE    IP
ledger-0-aaaaa  0     Running  yes           2  1m40s  node-a  10.0.0.1
ledger-1-bbbbb  1     Running  yes           2  1m40s  node-a  10.0.0.2

Conditions
TYPE                   STATUS  REASON           SINCE  MESSAGE
Available              True    AllShardsServed  1m00s  every shard is owned by a
                                                       slot whose pod is Ready
Progressing            False   Converged        50s    2 slots of revision abc
                                                       serve a stable ring
Degraded               False   AsExpected       1m30s  nothing needs attention
MovedSessionsReported  True    Complete         20s    ring version 3: all 2
                                                       pods reported final
                                                       counts

Last transition  ScaleUp, ring version 1 -> 3, 3 shards moved
Duration         20s, finished 50s ago
Warm hit         90.0% of 10 moved sessions (final reports of 2 pods)
Moved sessions   warm 9 (precopied 0, transferred 0, pushed 9, promoted 0), cold
                 1 (absent 1, rolled forward 0, fenced load 0)
POD             REPORT  WARM  COLD  ABSENT  ROLLED-FWD  FENCED-LOAD
ledger-0-aaaaa  final      0     0       0           0            0
ledger-1-bbbbb  final      9     1       1           0            0

Warnings
(none)
";
        assert_eq!(text, expected, "\n{text}");
    }

    /// `stable()` placing by load, with what the operator measured.
    fn placing_by_load() -> crate::fetch::Objects {
        let mut objects = stable();
        objects.service.spec.placement.balance = BalanceMode::Load;
        let placement = serde_json::json!({
            "pods": [
                {"slot": 0, "pod": "ledger-0-aaaaa", "requestsPerSecond": 950.5,
                 "bytesPerSecond": 1_234_567.0, "ringVersion": 3},
                {"slot": 1, "pod": "ledger-1-bbbbb", "ringVersion": 2,
                 "problem": "stale: its window ended 40.0 s ago, more than 3 windows of 5 s"},
            ],
            "busiestPercent": 135,
            "message": "waiting for every pod's load report for ring version 3",
            "lastRebalance": {"startedAt": "2030-01-01T00:00:30Z", "fromVersion": 1,
                "shardsMoved": 3, "busiestPercentBefore": 152, "busiestPercentPredicted": 108},
            "triggerHeld": {"ringVersion": 3, "windowEndMs": 1_893_456_090_000_u64,
                "busiestPercent": 135},
            "hotShards": [{"shard": 5, "slot": 0, "requestsPerSecond": 12_500.0,
                "percentOfMean": 140}],
        });
        objects.service.status.as_mut().unwrap().placement =
            Some(serde_json::from_value(placement).unwrap());
        objects
    }

    #[test]
    fn placement_by_load_shows_each_pods_load_the_last_rebalance_and_hot_shards() {
        let report = build(&placing_by_load(), now());
        let text = text(&report, DEFAULT_WIDTH);
        assert_fits(&text, 80);
        let start = text.find("\nPlacement\n").expect("a placement section");
        let end = text.find("\nWarnings").unwrap();
        let expected = "
Placement
Balance          Load (trigger 120%, target 110% of the mean)
Busiest pod      135% of the mean
Trigger held     135% in the last windows of ring version 3: a rebalance starts
                 if the next confirm it
Message          waiting for every pod's load report for ring version 3
Last rebalance   1m10s ago, from ring version 1: 3 shards moved, busiest 152% ->
                 108% predicted
Hot shards       5 on slot 0 (12.5k req/s, 140% of the mean)
SLOT  POD             REQ/S  BYTES/S  RING  PROBLEM
0     ledger-0-aaaaa  950.5     1.2M     3  -
1     ledger-1-bbbbb      -        -     2  stale: its window ended 40.0 s ago,
                                            more than 3 windows of 5 s
";
        assert_eq!(&text[start..end], expected, "\n{text}");
        let json: serde_json::Value = serde_json::from_str(&json(&report).unwrap()).unwrap();
        assert_eq!(json["placement"]["mode"], "Load");
        assert_eq!(json["placement"]["pods"][0]["requestsPerSecond"], 950.5);
        assert_eq!(json["placement"]["lastRebalanceSecondsAgo"], 70);
        // Balanced by key count, without a placement status: no section, `null` in JSON.
        let keys = build(&stable(), now());
        assert!(keys.placement.is_none());
        assert!(!super::text(&keys, DEFAULT_WIDTH).contains("Placement"));
    }

    #[test]
    fn long_pod_names_are_cut_in_the_middle_to_fit_80_columns() {
        let mut objects = stable();
        let long = "a-very-long-statefulservice-name-for-the-session-ledger-0-x7k2q";
        objects.ring = Some(config_map(&ring_json(
            6,
            "warm",
            &[(long, "active"), ("ledger-1-bbbbb", "active")],
            &[0, 0, 1, 0, 1, 0, 1, 0],
            Some(&[0, 0, 1, 1, 1, 0, 1, 0]),
        )));
        objects.pods[1] = pod(long, 0, true, &[("locus.dev/observed-ring-version", "6")]);
        let report = build(&objects, now());
        let text = text(&report, 80);
        assert_fits(&text, 80);
        // The tail that tells pods apart survives the cut.
        assert!(text.contains("…ger-0-x7k2q"), "{text}");
        assert!(text.contains("OBS  WARM  DRAIN"), "{text}");
        assert!(text.contains("5->4"), "{text}");
        // A narrower terminal still gets every column.
        let narrow = super::text(&report, 60);
        assert!(
            narrow.lines().any(|l| l.starts_with("SLOT  POD")),
            "{narrow}"
        );
    }

    #[test]
    fn successors_and_progress_show_during_a_transition() {
        let mut objects = stable();
        let mut ring = ring_json(
            4,
            "warm",
            &[("ledger-0-aaaaa", "active"), ("ledger-1-bbbbb", "active")],
            &[0, 0, 1, 0, 1, 0, 1, 0],
            Some(&[0, 0, 1, 0, 1, 0, 1, 0]),
        );
        ring["slots"][1]["successor"] = serde_json::json!(
            {"name": "ledger-1-ccccc", "uid": "uid-ledger-1-ccccc", "address": "10.0.0.9:8080"}
        );
        objects.ring = Some(config_map(&ring));
        objects.pods.push(pod(
            "ledger-1-ccccc",
            1,
            true,
            &[
                ("locus.dev/observed-ring-version", "4"),
                ("locus.dev/warmed-ring-version", "4"),
            ],
        ));
        let text = text(&build(&objects, now()), 80);
        assert_fits(&text, 80);
        assert!(
            text.contains(
                "1     ledger-1-ccccc  successor  yes                     4     4      -"
            ),
            "{text}"
        );
        assert!(text.contains("- pod ledger-0-aaaaa reports observed ring version 3"));
    }

    #[test]
    fn without_a_ring_the_rest_is_shown() {
        let mut objects = stable();
        objects.ring = None;
        let text = text(&build(&objects, now()), 80);
        assert_fits(&text, 80);
        assert!(
            text.contains("Ring             none (see Warnings)"),
            "{text}"
        );
        assert!(!text.contains("\nSlots\n"), "{text}");
        assert!(text.contains("\nPods\n"), "{text}");
        assert!(
            text.contains("- no ring published yet: ConfigMap demo/ledger-ring does not exist"),
            "{text}"
        );
    }

    #[test]
    fn truncation_keeps_the_tail_of_names_and_the_start_of_prose() {
        assert_eq!(truncate_middle("ledger-0-abcde", 20), "ledger-0-abcde");
        assert_eq!(
            truncate_middle("statefulservice-12-abcde", 16),
            "statefu…12-abcde"
        );
        assert_eq!(
            truncate_middle("statefulservice-12-abcde", 12),
            "sta…12-abcde"
        );
        assert_eq!(truncate_middle("abcdef", 1), "…");
        assert_eq!(truncate_middle("abcdef", 0), "");
        assert_eq!(truncate_end("every shard is owned", 10), "every sha…");
        for width in 0..30 {
            assert!(chars(&truncate_middle("x".repeat(40).as_str(), width)) <= width);
            assert!(chars(&truncate_end("y".repeat(40).as_str(), width)) <= width);
        }
    }

    #[test]
    fn tables_shrink_the_widest_shrinkable_column_first() {
        let mut table = Table::new(vec![
            Column::left("A"),
            Column::shrinking("NAME", Cut::Middle, 6),
            Column::shrinking("NOTE", Cut::End, 6),
        ]);
        table.row(vec!["1".into(), "n".repeat(20), "m".repeat(30)]);
        // 55 columns wide: NOTE shrinks to NAME's width, then both shrink in turn.
        let lines = table.render(40);
        assert_eq!(
            lines[1],
            format!(
                "1  {}  {}",
                "n".repeat(8) + "…" + &"n".repeat(8),
                "m".repeat(17) + "…"
            )
        );
        let lines = table.render(20);
        assert_eq!(lines[0], "A  NAME     NOTE");
        assert!(lines.iter().all(|l| chars(l) <= 20), "{lines:?}");
    }

    #[test]
    fn a_wrapped_column_takes_as_many_lines_as_it_needs() {
        let mut table = Table::new(vec![
            Column::left("TYPE"),
            Column::shrinking("MESSAGE", Cut::Wrap, 10),
        ]);
        table.row(vec![
            "Degraded".into(),
            "slots [1, 2] have no Ready pod".into(),
        ]);
        table.row(vec!["Available".into(), "yes".into()]);
        assert_eq!(
            table.render(30),
            [
                "TYPE       MESSAGE",
                "Degraded   slots [1, 2] have",
                "           no Ready pod",
                "Available  yes",
            ]
        );
    }

    #[test]
    fn prose_wraps_at_words() {
        assert_eq!(
            wrap("one two three four", 10, "- ", "  "),
            ["- one two", "  three", "  four"]
        );
        assert_eq!(wrap("", 10, "x", ""), ["x"]);
        assert_eq!(
            wrap("abcdefghij", 6, "- ", "  "),
            ["- abcd", "  efgh", "  ij"]
        );
    }

    #[test]
    fn a_running_transition_shows_in_the_phase_line() {
        let mut objects = stable();
        let status = objects.service.status.as_mut().unwrap();
        status.phase = locus_contract::crd::Phase::Switch;
        let last = status.last_transition.as_mut().unwrap();
        last.finished_at = None;
        last.duration_seconds = None;
        last.warm_hit_percent = None;
        let text = text(&build(&objects, now()), 80);
        assert!(
            text.contains(
                "Phase            Switch: ScaleUp from ring version 1, running for 1m10s\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Duration         running for 1m10s\n"),
            "{text}"
        );
        assert!(!text.contains("Warm hit"), "{text}");

        let objects = stable();
        let mut report = build(&objects, now());
        let last = report.last_transition.as_mut().unwrap();
        last.duration_seconds = Some(0.0);
        assert!(super::text(&report, 80).contains("Duration         under 1s, finished 50s ago"));
    }

    /// `stable()` with the last transition's reports not final: `reason` of the condition,
    /// pod b's report in `state`, pod a's annotation `a_annotation` (`None`: removed).
    fn not_final(reason: &str, b_state: &str, a_annotation: Option<&str>) -> StatusReport {
        let mut objects = stable();
        let status = objects.service.status.as_mut().unwrap();
        let last = status.last_transition.as_mut().unwrap();
        last.warm_hit_percent = None;
        let moved = last.moved_sessions.as_mut().unwrap();
        moved.r#final = false;
        moved.pods_reported = 0;
        moved.cold.rolled_forward = 2;
        moved.cold.total = 3;
        // A losing pod was gone: the two loads without an answer may miss writes.
        moved.cold_previous_gone = 2;
        moved.pending = vec!["ledger-1-bbbbb".to_owned()];
        moved.missing = vec!["ledger-0-aaaaa".to_owned()];
        let condition = status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "MovedSessionsReported")
            .unwrap();
        condition.status = "False".to_owned();
        condition.reason = reason.to_owned();
        let annotations = |p: &mut k8s_openapi::api::core::v1::Pod| {
            p.metadata.annotations.get_or_insert_default().clone()
        };
        for pod in &mut objects.pods {
            let mut a = annotations(pod);
            if pod.metadata.name.as_deref() == Some("ledger-1-bbbbb") {
                a.insert(
                    "locus.dev/moved-sessions".to_owned(),
                    format!(r#"{{"3":{{"warm":{{"pushed":9}},"cold":{{"absent":1,"rolledForward":2}},"state":"{b_state}"}}}}"#),
                );
            } else {
                match a_annotation {
                    Some(text) => a.insert("locus.dev/moved-sessions".to_owned(), text.to_owned()),
                    None => a.remove("locus.dev/moved-sessions"),
                };
            }
            pod.metadata.annotations = Some(a);
        }
        build(&objects, now())
    }

    #[test]
    fn reports_not_final_show_pending_or_missing_and_never_a_figure() {
        let report = not_final("Pending", "counting", None);
        let shown = super::text(&report, 80);
        assert_fits(&shown, 80);
        assert!(
            shown.contains("Warm hit         pending (0 of 2 pods final)\n"),
            "{shown}"
        );
        assert!(shown.contains("ledger-0-aaaaa  missing      -"), "{shown}");
        assert!(shown.contains("ledger-1-bbbbb  counting     9"), "{shown}");
        // Missing is said only once the operator gave up waiting; cold takeovers at once.
        let kinds: Vec<_> = report.warnings.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [crate::warnings::WarningKind::ColdTakeovers],
            "{kinds:?}"
        );
        assert!(report.warnings[0].message.contains("rolled forward 2"));

        let report = not_final("ReportsMissing", "partial", Some("{"));
        let shown = super::text(&report, 80);
        assert_fits(&shown, 80);
        assert!(
            shown.contains("Warm hit         reports missing: ledger-0-aaaaa\n"),
            "{shown}"
        );
        assert!(shown.contains("ledger-0-aaaaa  unreadable"), "{shown}");
        assert!(shown.contains("ledger-1-bbbbb  partial"), "{shown}");
        let named: Vec<_> = report
            .warnings
            .iter()
            .filter(|w| w.kind == crate::warnings::WarningKind::MovedSessionsMissing)
            .map(|w| w.subject.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(
            named,
            ["ledger-0-aaaaa", "ledger-1-bbbbb"],
            "{:?}",
            report.warnings
        );
        let value: serde_json::Value = serde_json::from_str(&json(&report).unwrap()).unwrap();
        assert_eq!(value["pods"][1]["movedReport"], "partial");
        assert_eq!(value["lastTransition"]["reports"], "ReportsMissing");
        assert_eq!(
            value["lastTransition"]["warmHitPercent"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        assert_eq!(human_duration(4.24), "4.2s");
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(185.0), "3m05s");
        assert_eq!(human_duration(7800.0), "2h10m");
        assert_eq!(human_duration(280_800.0), "3d6h");
        assert_eq!(human_duration(-1.0), "?");
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(60), "1m00s");
    }

    #[test]
    fn the_json_has_the_documented_fields() {
        let report = build(&stable(), now());
        let value: serde_json::Value = serde_json::from_str(&json(&report).unwrap()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut documented = vec![
            "service",
            "namespace",
            "generation",
            "observedGeneration",
            "phase",
            "replicas",
            "shards",
            "revision",
            "ring",
            "ringProblem",
            "slots",
            "pods",
            "conditions",
            "lastTransition",
            "placement",
            "warnings",
        ];
        documented.sort_unstable();
        assert_eq!(keys, documented);
        assert_eq!(value["phase"], "Stable");
        assert_eq!(
            value["replicas"],
            serde_json::json!({"desired": 2, "current": 2, "ready": 2, "active": 2})
        );
        assert_eq!(value["ring"]["version"], 3);
        assert_eq!(value["ring"]["phase"], "stable");
        assert_eq!(value["ring"]["configMap"], "ledger-ring");
        assert_eq!(
            value["slots"][0],
            serde_json::json!({
                "index": 0, "state": "active", "pod": "ledger-0-aaaaa", "ready": true,
                "shards": 5, "sharePercent": 62.5, "targetShards": null, "previousShards": null,
                "gaining": 0, "losing": 0, "successor": null, "predecessor": null,
            })
        );
        assert_eq!(
            value["pods"][1],
            serde_json::json!({
                "name": "ledger-1-bbbbb", "slot": 1, "ringRole": "slot", "phase": "Running",
                "ready": true, "terminating": false, "restarts": 2, "node": "node-a",
                "ip": "10.0.0.2", "ageSeconds": 100,
                "progress": {"observed": 3, "warmed": null, "drained": null},
                "movedSessions": {"version": 3,
                    "warm": {"precopied": 0, "transferred": 0, "pushed": 9, "promoted": 0,
                             "total": 9},
                    "cold": {"absent": 1, "rolledForward": 0, "fencedLoad": 0, "total": 1, "created": 0},
                    "served": {"warm": 0, "cold": 0}},
                "movedReport": "final",
                "unreadableAnnotations": [],
            })
        );
        assert_eq!(value["conditions"][0]["type"], "Available");
        assert_eq!(value["conditions"][0]["sinceSeconds"], 60);
        assert_eq!(
            value["lastTransition"],
            serde_json::json!({
                "kind": "ScaleUp", "fromVersion": 1, "toVersion": 3, "shardsMoved": 3,
                "startedAt": "2030-01-01T00:00:30Z", "finishedAt": "2030-01-01T00:00:50Z",
                "durationSeconds": 20.0, "finishedSecondsAgo": 50, "inProgress": false,
                "warmHitPercent": 90.0,
                "movedSessions": {
                    "warm": {"precopied": 0, "transferred": 0, "pushed": 9, "promoted": 0,
                             "total": 9},
                    "cold": {"absent": 1, "rolledForward": 0, "fencedLoad": 0, "total": 1, "created": 0},
                    "served": {"warm": 8, "cold": 1},
                    "coldWhilePreviousAlive": 1, "coldPreviousGone": 0,
                    "podsExpected": 2, "podsReported": 2, "pending": [], "missing": [],
                    "final": true},
                "reports": "Complete",
            })
        );
        assert_eq!(value["warnings"], serde_json::json!([]));

        let mut objects = stable();
        objects.ring = None;
        let value: serde_json::Value =
            serde_json::from_str(&json(&build(&objects, now())).unwrap()).unwrap();
        assert_eq!(value["ring"], serde_json::Value::Null);
        assert_eq!(value["ringProblem"]["reason"], "NotFound");
        assert_eq!(value["warnings"][0]["kind"], "NoRing");
    }
}
