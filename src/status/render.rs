//! The `remixd status` screen: a compact table in the manner of `pueue status`, for a person
//! at a terminal. Scripts read `--json` instead; this layout may change.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::Report;
use crate::config::Config;

/// Longest quarantine message shown; `error.json` holds the whole text.
const MESSAGE_CHARS: usize = 70;

/// The whole screen, written at `at`.
#[must_use]
pub fn table(report: &Report, config: &Config, at: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "remixd status: {} ({} UTC)\n",
        config.inbox.display(),
        short_time(&crate::clock::rfc3339(at))
    );
    processes(&mut out, report);
    let _ = writeln!(out);
    let rows = [
        ("API", api_line(report)),
        ("Pending", format!("{} in the inbox", report.pending)),
        ("Work area", work_line(report)),
        ("Today", today_line(report)),
    ];
    for (name, text) in rows {
        let _ = writeln!(out, "{name:<10} {text}");
    }
    if !report.recent_quarantined.is_empty() {
        let _ = writeln!(out, "\nLast quarantined");
        let mut grid = vec![row(&["AT", "FILE", "REASON", "MESSAGE"])];
        for q in &report.recent_quarantined {
            let message: String = q.message.chars().take(MESSAGE_CHARS).collect();
            let message = if message.len() < q.message.len() {
                format!("{message}…")
            } else {
                message
            };
            grid.push(row(&[&short_time(&q.at), &q.file, &q.reason, &message]));
        }
        aligned(&mut out, &grid);
    }
    out
}

fn processes(out: &mut String, report: &Report) {
    if report.processes.is_empty() {
        let _ = writeln!(out, "No remixd process has registered in this work area.");
        return;
    }
    let mut grid = vec![row(&[
        "OWNER", "HOST", "PID", "VERSION", "STARTED", "LEASE", "STATE",
    ])];
    for p in &report.processes {
        grid.push(row(&[
            &p.owner,
            &p.host,
            &p.pid.to_string(),
            &p.version,
            &p.started_at.as_deref().map_or("-".into(), short_time),
            &p.lease_age_s.map_or("-".into(), |s| format!("{s}s ago")),
            if p.alive { "alive" } else { "presumed dead" },
        ]));
    }
    aligned(out, &grid);
}

fn api_line(report: &Report) -> String {
    let api = &report.api;
    if !api.paused {
        return "working".into();
    }
    let mut line = format!("PAUSED ({})", api.reason.as_deref().unwrap_or("unknown"));
    if let Some(since) = &api.since {
        let _ = write!(line, " since {} UTC", short_time(since));
    }
    if let Some(next) = &api.next_probe_at {
        let _ = write!(line, ", next probe {} UTC", short_time(next));
    }
    line
}

fn work_line(report: &Report) -> String {
    let total: u64 = report.in_flight.values().sum();
    if total == 0 {
        return "no job in flight".into();
    }
    let stages: Vec<String> = report
        .in_flight
        .iter()
        .map(|(stage, n)| format!("{stage} {n}"))
        .collect();
    format!("{total} in flight ({})", stages.join(", "))
}

fn today_line(report: &Report) -> String {
    let t = &report.today;
    let images = match report.budgets.images {
        Some(budget) => format!("{} of {budget} images", t.images),
        None => format!("{} images (no budget)", t.images),
    };
    let spend = match (t.spend_usd, report.budgets.spend_usd) {
        (Some(usd), Some(budget)) => format!("${usd:.2} of ${budget:.2}"),
        (Some(usd), None) => format!("${usd:.2} (no budget)"),
        (None, _) => "spend not recorded".into(),
    };
    format!(
        "{} completed, {} quarantined; {images}; {spend}",
        t.completed, t.quarantined
    )
}

/// `2024-05-06T10:42:03.123Z` as `2024-05-06 10:42:03`.
fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replacen('T', " ", 1)
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Columns padded to their widest cell; the last column is not padded.
fn aligned(out: &mut String, grid: &[Vec<String>]) {
    let columns = grid.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| grid.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in grid {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}
