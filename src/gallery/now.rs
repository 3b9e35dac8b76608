//! The "now" box at the top of `outbox/index.html`: the jobs in flight in every process (from
//! their journals in the work area), the files waiting in the inbox, and a pause in plain
//! words, so the person who just dropped a file sees it was taken.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::render::{esc, hhmm};
use crate::api::PauseReason;
use crate::job::{SourceRef, Timings};

/// What the box says.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Now {
    pub in_flight: Vec<Flight>,
    pub waiting: usize,
    pub pause: Option<(PauseReason, SystemTime)>,
}

/// One job in flight.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Flight {
    /// Its file, relative to the inbox.
    pub file: String,
    pub stage: String,
    pub since: Option<SystemTime>,
}

/// The part of a job's journal the box needs; anything else in it is ignored, so a journal
/// from a newer version still shows.
#[derive(Deserialize)]
struct Journal {
    source: SourceRef,
    stage: String,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    timings: Option<Timings>,
}

impl Now {
    /// Whether there is nothing to say (nothing in flight, waiting or paused).
    pub(crate) fn is_quiet(&self) -> bool {
        self.in_flight.is_empty() && self.waiting == 0 && self.pause.is_none()
    }
}

/// The jobs in flight in every process using `work_dir`, oldest first.
pub(crate) fn in_flight(work_dir: &Path) -> Vec<Flight> {
    let mut found: Vec<Flight> = jobs_folders(work_dir)
        .iter()
        .flat_map(|jobs| journals(jobs))
        .map(|j| Flight {
            file: j.source.rel_path().to_string_lossy().into_owned(),
            stage: stage_words(&j.stage, j.attempt),
            since: j.timings.and_then(|t| t.claimed_at.or(t.detected_at)),
        })
        .collect();
    found.sort_by_key(|f| f.since);
    found
}

/// How many jobs are at each stage (`claimed`, `submitting`, ...) in the `jobs` folders
/// given: one process's, or every process's ([`jobs_folders`]), for `remixd status`.
pub(crate) fn stage_counts(folders: &[PathBuf]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for j in folders.iter().flat_map(|jobs| journals(jobs)) {
        *counts.entry(j.stage).or_insert(0) += 1;
    }
    counts
}

/// Every `jobs` folder of the work area: each owner's, and the single-process layout's.
pub(crate) fn jobs_folders(work_dir: &Path) -> Vec<PathBuf> {
    let owners = std::fs::read_dir(work_dir.join(crate::job::lease::OWNERS_DIR))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join(crate::job::journal::JOBS_DIR))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    owners
        .into_iter()
        .chain([work_dir.join(crate::job::journal::JOBS_DIR)])
        .collect()
}

/// The readable journals in one `jobs` folder.
fn journals(jobs: &Path) -> Vec<Journal> {
    let Ok(entries) = std::fs::read_dir(jobs) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("job.json")).ok())
        .filter_map(|bytes| crate::job::journal::last_record::<Journal>(&bytes).ok())
        .collect()
}

fn stage_words(stage: &str, attempt: Option<u32>) -> String {
    match (stage, attempt) {
        ("claiming" | "claimed", _) => "taken, waiting its turn".into(),
        ("submitting", Some(n)) if n > 1 => format!("with the API (try {n})"),
        ("submitting", _) => "with the API".into(),
        ("responded", _) => "downloading the results".into(),
        ("publishing", _) => "filing into the outbox".into(),
        ("quarantining", _) => "filing into the quarantine".into(),
        (other, _) => other.to_owned(),
    }
}

/// Why submissions are paused, in plain words for the people waiting.
pub(crate) fn pause_words(reason: PauseReason) -> &'static str {
    match reason {
        PauseReason::Balance => "the account's balance is spent",
        PauseReason::Unauthorized => "the API refuses remixd's key; an operator has to fix it",
        PauseReason::Unavailable => "the API cannot be reached",
        PauseReason::Budget => "today's budget is used up; submissions go on after 00:00 UTC",
        PauseReason::DailyLimit => {
            "the API account's daily limit is reached; submissions go on after 00:00 UTC"
        }
    }
}

/// The box as HTML, written at `at`.
pub(crate) fn render(now: &Now, at: SystemTime) -> String {
    let mut out = String::new();
    let class = if now.pause.is_some() {
        "now paused"
    } else {
        "now"
    };
    let _ = write!(
        out,
        "<section class=\"{class}\" aria-label=\"now\"><h2>Now</h2>"
    );
    if let Some((reason, since)) = now.pause {
        let _ = write!(
            out,
            "<p class=\"pause\"><strong>Paused since {} UTC: {}.</strong> Files wait and go on by themselves.</p>",
            hhmm(since),
            esc(pause_words(reason))
        );
    }
    if now.in_flight.is_empty() {
        out.push_str("<p>No job in flight.</p>");
    } else {
        let _ = write!(
            out,
            "<p>{} in flight:</p><ul class=\"flights\">",
            count(now.in_flight.len(), "job")
        );
        for f in &now.in_flight {
            let ago = f
                .since
                .map_or_else(String::new, |s| format!(", for {}", ago(s, at)));
            let _ = write!(
                out,
                "<li><span class=\"file\">{}</span>: {}{}</li>",
                esc(&f.file),
                esc(&f.stage),
                ago
            );
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<p>{} waiting in the inbox.</p>",
        count(now.waiting, "file")
    );
    let _ = write!(
        out,
        "<p class=\"written\">Written at {} UTC; this page reloads every 30 s.</p></section>",
        super::render::hhmmss(at)
    );
    out
}

fn count(n: usize, what: &str) -> String {
    match n {
        0 => format!("No {what}"),
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

fn ago(since: SystemTime, at: SystemTime) -> String {
    let secs = at.duration_since(since).map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_pause_is_said_in_plain_words_with_its_start() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 3600 + 2 * 60);
        let now = Now {
            in_flight: vec![Flight {
                file: "a/<b>.png".into(),
                stage: stage_words("submitting", Some(2)),
                since: Some(since),
            }],
            waiting: 3,
            pause: Some((PauseReason::Balance, since)),
        };
        let html = render(&now, since + Duration::from_secs(190));
        assert!(html.contains(
            "Paused since 10:02 UTC: the account&#39;s balance is spent.</strong> Files wait and go on by themselves."
        ), "{html}");
        assert!(
            html.contains("a/&lt;b&gt;.png</span>: with the API (try 2), for 3 min"),
            "{html}"
        );
        assert!(html.contains("3 files waiting in the inbox"), "{html}");
        assert!(!now.is_quiet());
        assert!(Now::default().is_quiet());
    }
}
