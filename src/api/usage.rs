//! The day's usage, deployment-wide, with no lock and no server: each process writes only its
//! own `owners/<id>/usage.json` (the UTC day, images received, images and USD that may have
//! been billed, and what its requests in flight have reserved), and the day's total is the sum
//! of every owner's file of that day. A dead owner's file keeps counting for its day (its
//! reservations may have been billed), and a restarted process is a new owner, so nothing a
//! restart or a takeover does resets the count. Deciding what to admit is the gate's job.
//!
//! With a budget, a reservation is on disk (synced) before its request goes out, so another
//! process admitting at the same moment sees it. Without one, the file is only the day's
//! record for `daemon.stats`: written without a sync, at most once a second and at stop.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::OWNERS_DIR;

/// Each owner's usage file, in its folder under `owners/`.
pub const USAGE_FILE: &str = "usage.json";

/// Written at most this often when no budget needs every reservation on disk.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// A file changed this recently is read again even when its mtime and size look the same:
/// network filesystems keep mtimes in whole seconds.
const FRESH: Duration = Duration::from_secs(2);

/// One owner's count for one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Images received (outputs with a URL).
    pub received: u64,
    /// Images asked for by requests that may have been billed. The old single-file layout's
    /// `images` reads as this.
    #[serde(alias = "images")]
    pub billable: u64,
    /// Estimated USD of those.
    pub usd: f64,
    /// Images asked for by requests sent and not answered yet.
    pub reserved: u64,
    /// Estimated USD of those.
    pub reserved_usd: f64,
}

impl Usage {
    fn empty(day: &str) -> Self {
        Self {
            day: day.to_owned(),
            ..Self::default()
        }
    }

    /// Images that may have been billed: settled and still in flight.
    #[must_use]
    pub fn images(&self) -> u64 {
        self.billable + self.reserved
    }

    /// USD that may have been billed: settled and still in flight.
    #[must_use]
    pub fn spend(&self) -> f64 {
        self.usd + self.reserved_usd
    }

    fn add(&mut self, other: &Self) {
        self.received += other.received;
        self.billable += other.billable;
        self.usd += other.usd;
        self.reserved += other.reserved;
        self.reserved_usd += other.reserved_usd;
    }
}

/// Another owner's file as last read.
#[derive(Debug, Clone)]
struct Cached {
    mtime: SystemTime,
    len: u64,
    usage: Usage,
}

/// This process's count and its view of everyone else's.
#[derive(Debug)]
pub struct Ledger {
    work_dir: PathBuf,
    /// This owner's file; `None` until the owner is known (nothing is written before).
    own: Option<PathBuf>,
    mine: Usage,
    others: HashMap<PathBuf, Cached>,
    dirty: bool,
    last_write: Option<Instant>,
}

impl Ledger {
    /// A ledger for the owners of `work_dir`; this process's own count starts at zero.
    #[must_use]
    pub fn new(work_dir: &Path) -> Self {
        Self {
            work_dir: work_dir.to_path_buf(),
            own: None,
            mine: Usage::empty(&crate::clock::utc_date()),
            others: HashMap::new(),
            dirty: false,
            last_write: None,
        }
    }

    /// Writes this process's count into `owner_dir` from now on.
    pub fn set_owner_dir(&mut self, owner_dir: &Path) {
        self.own = Some(owner_dir.join(USAGE_FILE));
    }

    fn roll_day(&mut self) {
        let today = crate::clock::utc_date();
        if self.mine.day != today {
            // Requests in flight over midnight stay reserved in the new day: that is when
            // they settle.
            let carried = (self.mine.reserved, self.mine.reserved_usd);
            self.mine = Usage::empty(&today);
            (self.mine.reserved, self.mine.reserved_usd) = carried;
            self.dirty = true;
        }
    }

    /// Reserves a request's images and USD before it is sent.
    pub fn reserve(&mut self, images: u64, usd: f64) {
        self.roll_day();
        self.mine.reserved += images;
        self.mine.reserved_usd += usd;
        self.dirty = true;
    }

    /// Settles a reservation: the request was answered (or failed). `billable` says whether it
    /// may have been billed; `received` counts the images that came.
    pub fn settle(&mut self, reserved: (u64, f64), billable: bool, received: u64) {
        self.roll_day();
        self.mine.reserved = self.mine.reserved.saturating_sub(reserved.0);
        self.mine.reserved_usd = (self.mine.reserved_usd - reserved.1).max(0.0);
        if billable {
            self.mine.billable += reserved.0;
            self.mine.usd += reserved.1;
        }
        self.mine.received += received;
        self.dirty = true;
    }

    /// Images this process reserved that are still in flight.
    #[must_use]
    pub fn own_reserved(&self) -> u64 {
        self.mine.reserved
    }

    /// The day's total over every owner (this one included, as it is in memory).
    pub fn total(&mut self) -> Usage {
        self.roll_day();
        let day = self.mine.day.clone();
        let mut total = self.mine.clone();
        for path in self.files() {
            if Some(&path) == self.own.as_ref() {
                continue;
            }
            if let Some(usage) = self.read_cached(&path).filter(|u| u.day == day) {
                total.add(&usage);
            }
        }
        total
    }

    /// Every owner's usage file, and the single-process layout's `<work_dir>/usage.json`.
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.work_dir.join(USAGE_FILE)];
        if let Ok(entries) = fs::read_dir(self.work_dir.join(OWNERS_DIR)) {
            files.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path().join(USAGE_FILE)),
            );
        }
        files
    }

    fn read_cached(&mut self, path: &Path) -> Option<Usage> {
        let Ok(meta) = fs::metadata(path) else {
            self.others.remove(path);
            return None;
        };
        let mtime = meta.modified().ok()?;
        let settled = SystemTime::now()
            .duration_since(mtime)
            .is_ok_and(|age| age > FRESH);
        if let Some(c) = self.others.get(path) {
            if settled && c.mtime == mtime && c.len == meta.len() {
                return Some(c.usage.clone());
            }
        }
        let usage: Usage = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        self.others.insert(
            path.to_path_buf(),
            Cached {
                mtime,
                len: meta.len(),
                usage: usage.clone(),
            },
        );
        Some(usage)
    }

    /// Writes this process's count: synced at once when `durable` (a budget counts on it),
    /// else at most once a second (`force` writes anyway, e.g. at stop).
    pub fn save(&mut self, durable: bool, force: bool) {
        let Some(path) = self.own.clone() else {
            return;
        };
        if !self.dirty {
            return;
        }
        let recent = self.last_write.is_some_and(|t| t.elapsed() < DEBOUNCE);
        if recent && !durable && !force {
            return;
        }
        match write_file(&path, &self.mine, durable) {
            Ok(()) => {
                self.dirty = false;
                self.last_write = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "could not record the day's usage");
            }
        }
    }
}

/// Replaces `path` in one rename. The file is created with mode 0666 less the umask, so every
/// member of the shared group can read it.
fn write_file(path: &Path, usage: &Usage, durable: bool) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(usage).map_err(std::io::Error::other)?;
    if durable {
        crate::fsx::write_durable(path, &bytes)
    } else {
        crate::fsx::write_replace(path, &bytes)
    }
}

/// Whether `owner_dir`'s usage file still counts (it is of today): such a folder is kept when
/// its owner stops or dies, so the day's count never drops.
#[must_use]
pub fn counts_today(owner_dir: &Path) -> bool {
    fs::read(owner_dir.join(USAGE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Usage>(&b).ok())
        .is_some_and(|u| u.day == crate::clock::utc_date())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(work: &Path, id: &str) -> PathBuf {
        let dir = work.join(OWNERS_DIR).join(id);
        fs::create_dir_all(&dir).expect("owner dir");
        dir
    }

    #[test]
    fn every_owners_file_of_today_counts_and_each_writes_only_its_own() {
        let work = tempfile::tempdir().expect("tempdir");
        let mut a = Ledger::new(work.path());
        a.set_owner_dir(&owner(work.path(), "A"));
        let mut b = Ledger::new(work.path());
        b.set_owner_dir(&owner(work.path(), "B"));
        a.reserve(2, 0.12);
        a.save(true, false);
        assert_eq!(b.total().images(), 2, "B sees A's reservation");
        b.reserve(1, 0.06);
        b.settle((1, 0.06), true, 1);
        b.save(true, false);
        a.settle((2, 0.12), false, 0);
        a.save(true, false);
        let total = b.total();
        assert_eq!((total.images(), total.received), (1, 1));
        assert!((total.spend() - 0.06).abs() < 1e-9);
        let stale = owner(work.path(), "OLD");
        let old = Usage {
            day: "2000-01-01".into(),
            billable: 50,
            ..Usage::default()
        };
        fs::write(
            stale.join(USAGE_FILE),
            serde_json::to_vec(&old).expect("json"),
        )
        .expect("old file");
        assert_eq!(b.total().images(), 1, "another day's file does not count");
        assert!(counts_today(&work.path().join(OWNERS_DIR).join("A")));
        assert!(!counts_today(&stale));
    }

    #[test]
    fn a_restarted_process_counts_what_its_old_self_reserved() {
        let work = tempfile::tempdir().expect("tempdir");
        let mut before = Ledger::new(work.path());
        before.set_owner_dir(&owner(work.path(), "BEFORE"));
        before.reserve(3, 0.18);
        before.save(true, false);
        drop(before); // killed with the request in flight
        let mut after = Ledger::new(work.path());
        after.set_owner_dir(&owner(work.path(), "AFTER"));
        assert_eq!(after.total().images(), 3);
    }

    #[test]
    fn without_a_budget_writes_are_debounced_but_a_forced_one_goes_through() {
        let work = tempfile::tempdir().expect("tempdir");
        let dir = owner(work.path(), "A");
        let mut a = Ledger::new(work.path());
        a.set_owner_dir(&dir);
        a.reserve(1, 0.0);
        a.save(false, false);
        a.settle((1, 0.0), true, 1);
        a.save(false, false);
        let on_disk: Usage =
            serde_json::from_slice(&fs::read(dir.join(USAGE_FILE)).expect("file")).expect("json");
        assert_eq!(
            on_disk.reserved, 1,
            "the second write waits for the debounce"
        );
        a.save(false, true);
        let on_disk: Usage =
            serde_json::from_slice(&fs::read(dir.join(USAGE_FILE)).expect("file")).expect("json");
        assert_eq!((on_disk.reserved, on_disk.billable), (0, 1));
    }

    #[test]
    fn the_old_single_file_layout_still_counts() {
        let work = tempfile::tempdir().expect("tempdir");
        let day = crate::clock::utc_date();
        fs::write(
            work.path().join(USAGE_FILE),
            format!(r#"{{"day":"{day}","images":7}}"#),
        )
        .expect("old usage");
        assert_eq!(Ledger::new(work.path()).total().images(), 7);
    }
}
