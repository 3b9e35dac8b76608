//! The recent past of the whole deployment, for `remixd status`: the jobs that ended this UTC
//! day (published and quarantined) and the latest quarantined ones, read from the END of
//! every process's row log ([`super::store`]), so the cost stays bounded however long the
//! logs grow. The logs stay the gallery's; this module only reads them.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::row::Row;

/// Bytes read at a time, walking a log backwards.
const CHUNK: u64 = 256 * 1024;

/// What the logs say about the recent past.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Jobs published this UTC day, by every process.
    pub completed_today: u64,
    /// Jobs quarantined this UTC day, by every process.
    pub quarantined_today: u64,
    /// The latest quarantined jobs, newest first.
    pub recent_quarantined: Vec<Ended>,
}

/// One quarantined job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ended {
    /// When it was quarantined (RFC 3339, UTC).
    pub at: String,
    /// Its file, relative to the inbox.
    pub file: String,
    /// The quarantine reason.
    pub reason: String,
    /// What `error.json` says, in plain words.
    pub message: String,
}

/// The jobs that ended on `day` (`YYYY-MM-DD`) and the last `recent` quarantined ones, from
/// the row logs of every process under `work_dir`.
#[must_use]
pub fn history(work_dir: &Path, day: &str, recent: usize) -> History {
    let Ok(entries) = std::fs::read_dir(work_dir.join(super::LOGS_DIR)) else {
        return History::default();
    };
    let mut rows = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_name().to_string_lossy().ends_with(".jsonl") {
            continue;
        }
        let mut quarantined = 0;
        rows.extend(read_backwards(&entry.path(), |row| {
            quarantined += usize::from(row.quarantined);
            row.at.get(..10).is_some_and(|d| d < day) && quarantined >= recent
        }));
    }
    // A row is logged again when a crash interrupted its job's end: count each job once.
    let mut seen = HashSet::new();
    rows.retain(|r| seen.insert(r.job_id.clone()));
    rows.sort_by_key(|r| std::cmp::Reverse(r.key()));
    let today = |r: &&Row| r.at.starts_with(day);
    History {
        completed_today: rows.iter().filter(|r| !r.quarantined).filter(today).count() as u64,
        quarantined_today: rows.iter().filter(|r| r.quarantined).filter(today).count() as u64,
        recent_quarantined: rows
            .iter()
            .filter(|r| r.quarantined)
            .take(recent)
            .map(|r| Ended {
                at: r.at.clone(),
                file: if r.subdir.is_empty() {
                    r.file.clone()
                } else {
                    format!("{}/{}", r.subdir, r.file)
                },
                reason: r.reason.clone().unwrap_or_default(),
                message: r.message.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// The rows of the log at `path`, newest first, until `enough` holds for one (that one
/// included) or the log's start. A last line still being written is left out.
fn read_backwards(path: &Path, mut enough: impl FnMut(&Row) -> bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let Ok(mut file) = std::fs::File::open(path) else {
        return rows;
    };
    let mut pos = file.metadata().map_or(0, |m| m.len());
    // The start of a line whose beginning lies before `pos`.
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK);
        let mut data = vec![0; (pos - start) as usize];
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_exact(&mut data).is_err() {
            break;
        }
        data.extend_from_slice(&carry);
        let mut pieces: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
        if first && !data.ends_with(b"\n") {
            pieces.pop();
        }
        first = false;
        carry = if start > 0 && !pieces.is_empty() {
            pieces.remove(0).to_vec()
        } else {
            Vec::new()
        };
        for line in pieces.iter().rev().filter(|l| !l.is_empty()) {
            if let Ok(row) = serde_json::from_slice::<Row>(line) {
                let stop = enough(&row);
                rows.push(row);
                if stop {
                    return rows;
                }
            }
        }
        pos = start;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: usize, at: &str, quarantined: bool) -> Row {
        let text = serde_json::json!({
            "job_id": format!("J{id:05}"), "at": at, "quarantined": quarantined,
            "subdir": "a", "dir": "a/x", "file": format!("f{id}.png"),
            "reason": quarantined.then_some("unsafe_content"),
            "message": quarantined.then_some("withheld"),
        });
        serde_json::from_value(text).expect("row")
    }

    #[test]
    fn today_and_the_last_quarantined_come_from_the_logs_ends_even_past_a_chunk() {
        let work = tempfile::tempdir().expect("tempdir");
        let logs = work.path().join(super::super::LOGS_DIR);
        // Enough old rows to span several chunks, then today's; a line cut short at the end.
        for i in 0..3000 {
            let r = row(i, "2020-01-01T10:00:00.000Z", i % 3 == 0);
            super::super::store::append(&logs, "OLD", &r).expect("append");
        }
        for i in 3000..3005 {
            let r = row(
                i,
                &format!("2030-05-06T10:00:0{}.000Z", i - 3000),
                i % 2 == 0,
            );
            super::super::store::append(&logs, "NEW", &r).expect("append");
        }
        // The same job logged twice (a resumed end) counts once.
        super::super::store::append(&logs, "NEW", &row(3004, "2030-05-06T10:00:04.000Z", true))
            .expect("append");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(logs.join("NEW.jsonl"))
            .expect("open");
        std::io::Write::write_all(&mut f, b"{\"job_id\":\"half").expect("write");
        let h = history(work.path(), "2030-05-06", 10);
        assert_eq!((h.completed_today, h.quarantined_today), (2, 3));
        assert_eq!(h.recent_quarantined.len(), 10);
        assert_eq!(h.recent_quarantined[0].file, "a/f3004.png");
        assert_eq!(h.recent_quarantined[0].reason, "unsafe_content");
        assert_eq!(
            h.recent_quarantined[3].file, "a/f2997.png",
            "then the old log's newest"
        );
    }
}
