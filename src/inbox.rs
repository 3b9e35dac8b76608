//! What an inbox entry is (image, sidecar, defaults, ignored, stray) and when it is ready:
//! settle detection by remixd's own clock, the wait for a late sidecar, orphan sidecars. This
//! is pure bookkeeping over observations; [`crate::watch`] makes the observations and
//! [`crate::daemon`] acts on the decisions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::job::JobId;
use crate::job::verdict::Reason;
use crate::sidecar::{SidecarKind, sidecar_candidates};

/// The per-folder defaults file, never moved.
pub const DEFAULTS_FILE: &str = "_defaults.yaml";

/// Names remixd itself writes into outbox and quarantine folders.
const RESERVED_NAMES: [&str; 2] = ["metadata.json", "error.json"];
const IMAGE_EXTS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];
const IGNORED_SUFFIXES: [&str; 5] = [".tmp", ".part", ".partial", ".crdownload", ".swp"];

/// What a name says an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// Hidden, temporary or partial: never touched.
    Ignored,
    /// `_defaults.yaml`: read, never moved.
    Defaults,
    /// `*.png *.jpg *.jpeg *.webp` (any case).
    Image,
    /// `*.yaml *.yml *.json *.txt`.
    Sidecar(SidecarKind),
    /// Anything else.
    Other,
}

/// Whether a single path component is ignored (`.x`, `~x`, `x.tmp`, ...).
#[must_use]
pub fn is_ignored_name(name: &OsStr) -> bool {
    let text = name.to_string_lossy();
    if text.starts_with('.') || text.starts_with('~') {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    IGNORED_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Classifies a file name.
#[must_use]
pub fn classify_name(name: &OsStr) -> NameKind {
    if is_ignored_name(name) {
        return NameKind::Ignored;
    }
    let text = name.to_string_lossy();
    if text == DEFAULTS_FILE {
        return NameKind::Defaults;
    }
    // remixd writes these names into every job folder; taking a file so named along would
    // overwrite it there, so it is left where it is (typically a job folder copied back).
    if RESERVED_NAMES.contains(&text.as_ref()) {
        return NameKind::Ignored;
    }
    let Some((_, ext)) = text.rsplit_once('.') else {
        return NameKind::Other;
    };
    let ext = ext.to_ascii_lowercase();
    if IMAGE_EXTS.contains(&ext.as_str()) {
        NameKind::Image
    } else if let Some(kind) = SidecarKind::from_ext(&ext) {
        NameKind::Sidecar(kind)
    } else {
        NameKind::Other
    }
}

/// What kind of file system entry was seen (from `lstat`, never following links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file.
    File,
    /// A symlink, FIFO, socket or device.
    Special,
}

/// One `lstat` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// File or special.
    pub kind: EntryType,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Change time in nanoseconds (catches writes that restore the mtime).
    pub ctime_ns: i128,
}

impl Snapshot {
    /// Takes a snapshot from `lstat` metadata; `None` for folders.
    #[must_use]
    pub fn from_metadata(meta: &std::fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let kind = if meta.is_dir() {
            return None;
        } else if meta.file_type().is_file() {
            EntryType::File
        } else {
            EntryType::Special
        };
        Some(Self {
            kind,
            size: meta.len(),
            mtime: meta.modified().ok(),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}

/// Timings the intake works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeTimings {
    /// Unchanged this long = completely written.
    pub settle: Duration,
    /// After an image settles, wait this long for its sidecar.
    pub sidecar_wait: Duration,
    /// A sidecar with no image this long is an orphan.
    pub orphan_after: Duration,
}

/// What the intake decided about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Claim an image, with its sidecar if one is beside it.
    Image {
        /// Id given at detection.
        job_id: JobId,
        /// When it was first seen.
        detected_at: SystemTime,
        /// Path relative to the inbox.
        image: PathBuf,
        /// Sidecar path relative to the inbox.
        sidecar: Option<PathBuf>,
    },
    /// Claim an entry that can only be quarantined.
    Stray {
        /// Id given at detection.
        job_id: JobId,
        /// When it was first seen.
        detected_at: SystemTime,
        /// Path relative to the inbox.
        path: PathBuf,
        /// Why.
        reason: Reason,
    },
}

#[derive(Debug, Clone)]
struct Tracked {
    name: NameKind,
    snap: Snapshot,
    job_id: JobId,
    detected_at: SystemTime,
    first_seen: Instant,
    stable_since: Instant,
}

impl Tracked {
    fn settled(&self, now: Instant, settle: Duration) -> Option<Instant> {
        let at = self.stable_since + settle;
        (now >= at).then_some(at)
    }
}

/// The set of inbox entries seen and not yet handed over.
#[derive(Debug)]
pub struct Intake {
    timings: IntakeTimings,
    once: bool,
    tracked: BTreeMap<PathBuf, Tracked>,
    /// Entries handed to a job and not yet seen gone: a scan that runs before the claim's
    /// rename must not detect them again.
    handed: HashMap<PathBuf, Instant>,
}

/// How long a handed-over entry still in the inbox is left to its job before it counts as
/// new again (the job gave up claiming it).
const HANDED_FOR: Duration = Duration::from_secs(600);

/// A new entry seen by [`Intake::observe`], for the `job.detected` log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Id given to it.
    pub job_id: JobId,
    /// Path relative to the inbox.
    pub path: PathBuf,
}

impl Intake {
    /// An empty intake. With `once`, nothing waits for a sidecar that is not there and orphan
    /// sidecars are left alone.
    #[must_use]
    pub fn new(timings: IntakeTimings, once: bool) -> Self {
        Self {
            timings,
            once,
            tracked: BTreeMap::new(),
            handed: HashMap::new(),
        }
    }

    /// Changes the timings (config reload).
    pub fn set_timings(&mut self, timings: IntakeTimings) {
        self.timings = timings;
    }

    /// Records what `lstat` says of `rel` now (`None`: gone). Returns the entry if it is new
    /// and will become a job.
    pub fn observe(
        &mut self,
        rel: &Path,
        snap: Option<Snapshot>,
        now: Instant,
    ) -> Option<Detected> {
        let Some(snap) = snap else {
            self.tracked.remove(rel);
            self.handed.remove(rel);
            return None;
        };
        if let Some(at) = self.handed.get(rel) {
            if now.duration_since(*at) < HANDED_FOR {
                return None;
            }
            self.handed.remove(rel);
        }
        if let Some(t) = self.tracked.get_mut(rel) {
            if t.snap != snap {
                t.snap = snap;
                t.stable_since = now;
            }
            return None;
        }
        let name = classify_name(rel.file_name()?);
        if matches!(name, NameKind::Ignored | NameKind::Defaults) {
            return None;
        }
        let job_id = JobId::new();
        self.tracked.insert(
            rel.to_path_buf(),
            Tracked {
                name,
                snap,
                job_id: job_id.clone(),
                detected_at: SystemTime::now(),
                first_seen: now,
                stable_since: now,
            },
        );
        let is_sidecar = matches!(name, NameKind::Sidecar(_)) && snap.kind == EntryType::File;
        (!is_sidecar).then(|| Detected {
            job_id,
            path: rel.to_path_buf(),
        })
    }

    /// Forgets handed-over entries a full scan no longer found (their claim moved them).
    pub fn forget_handed_missing(&mut self, seen: &HashSet<PathBuf>) {
        self.handed.retain(|path, _| seen.contains(path));
    }

    /// Paths being tracked (to re-`lstat` them).
    pub fn tracked_paths(&self) -> impl Iterator<Item = &Path> {
        self.tracked.keys().map(PathBuf::as_path)
    }

    /// Entries that will still become jobs (orphan sidecars in `once` mode do not count).
    #[must_use]
    pub fn pending(&self) -> usize {
        if !self.once {
            return self.tracked.len();
        }
        let wanted = self.wanted_sidecars();
        self.tracked
            .iter()
            .filter(|(rel, t)| !is_lone_sidecar(rel, t, &wanted))
            .count()
    }

    /// Every sidecar name some tracked image would take, so that finding a lone sidecar is
    /// one lookup instead of a pass over the whole inbox.
    fn wanted_sidecars(&self) -> HashSet<PathBuf> {
        let mut wanted = HashSet::new();
        for (rel, t) in &self.tracked {
            if t.name != NameKind::Image {
                continue;
            }
            let parent = rel.parent().unwrap_or(Path::new(""));
            if let Some(name) = rel.file_name() {
                for c in sidecar_candidates(name) {
                    wanted.insert(parent.join(c));
                }
            }
        }
        wanted
    }

    /// Up to `capacity` entries ready to claim, removed from tracking.
    pub fn take_ready(&mut self, now: Instant, capacity: usize) -> Vec<Decision> {
        let mut out = Vec::new();
        if capacity == 0 {
            return out;
        }
        let wanted = self.wanted_sidecars();
        let keys: Vec<PathBuf> = self.tracked.keys().cloned().collect();
        for rel in keys {
            if out.len() >= capacity {
                break;
            }
            let Some(t) = self.tracked.get(&rel) else {
                continue;
            };
            if let Some(decision) = self.decide(&rel, t, now, &wanted) {
                self.tracked.remove(&rel);
                self.handed.insert(rel.clone(), now);
                if let Decision::Image {
                    sidecar: Some(s), ..
                } = &decision
                {
                    self.tracked.remove(s);
                    self.handed.insert(s.clone(), now);
                }
                out.push(decision);
            }
        }
        out
    }

    fn decide(
        &self,
        rel: &Path,
        t: &Tracked,
        now: Instant,
        wanted: &HashSet<PathBuf>,
    ) -> Option<Decision> {
        let settled_at = t.settled(now, self.timings.settle)?;
        let stray = |reason| {
            Some(Decision::Stray {
                job_id: t.job_id.clone(),
                detected_at: t.detected_at,
                path: rel.to_path_buf(),
                reason,
            })
        };
        if t.snap.kind == EntryType::Special {
            return stray(Reason::NotRegularFile);
        }
        match t.name {
            NameKind::Image => self.decide_image(rel, t, now, settled_at),
            NameKind::Sidecar(_) => {
                let orphaned = now.duration_since(t.first_seen) >= self.timings.orphan_after;
                if is_lone_sidecar(rel, t, wanted) && orphaned && !self.once {
                    stray(Reason::OrphanSidecar)
                } else {
                    None
                }
            }
            NameKind::Other => stray(Reason::UnsupportedFormat),
            NameKind::Ignored | NameKind::Defaults => None,
        }
    }

    fn decide_image(
        &self,
        rel: &Path,
        t: &Tracked,
        now: Instant,
        settled_at: Instant,
    ) -> Option<Decision> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let sidecar = sidecar_candidates(rel.file_name()?)
            .into_iter()
            .map(|c| parent.join(c))
            .find(|c| {
                self.tracked
                    .get(c)
                    .is_some_and(|s| s.snap.kind == EntryType::File)
            });
        match &sidecar {
            Some(s) => {
                self.tracked.get(s)?.settled(now, self.timings.settle)?;
            }
            None if !self.once && now < settled_at + self.timings.sidecar_wait => return None,
            None => {}
        }
        Some(Decision::Image {
            job_id: t.job_id.clone(),
            detected_at: t.detected_at,
            image: rel.to_path_buf(),
            sidecar,
        })
    }
}

/// A sidecar with no image beside it that would take it.
fn is_lone_sidecar(rel: &Path, t: &Tracked, wanted: &HashSet<PathBuf>) -> bool {
    matches!(t.name, NameKind::Sidecar(_))
        && t.snap.kind == EntryType::File
        && !wanted.contains(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timings() -> IntakeTimings {
        IntakeTimings {
            settle: 100 * MS,
            sidecar_wait: 300 * MS,
            orphan_after: 1000 * MS,
        }
    }

    #[allow(clippy::unnecessary_wraps)] // reads like the observation it stands for
    fn file(size: u64) -> Option<Snapshot> {
        Some(Snapshot {
            kind: EntryType::File,
            size,
            mtime: None,
            ctime_ns: 0,
        })
    }

    #[test]
    fn classifies_names() {
        assert_eq!(classify_name(OsStr::new("cat.PNG")), NameKind::Image);
        assert_eq!(classify_name(OsStr::new("cat.jpeg")), NameKind::Image);
        assert_eq!(
            classify_name(OsStr::new("cat.yml")),
            NameKind::Sidecar(SidecarKind::Yaml)
        );
        assert_eq!(
            classify_name(OsStr::new("_defaults.yaml")),
            NameKind::Defaults
        );
        assert_eq!(classify_name(OsStr::new(".cat.png")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("~cat.png")), NameKind::Ignored);
        assert_eq!(classify_name(OsStr::new("cat.png.part")), NameKind::Ignored);
        assert_eq!(
            classify_name(OsStr::new("cat.crdownload")),
            NameKind::Ignored
        );
        assert_eq!(classify_name(OsStr::new("notes.pdf")), NameKind::Other);
        assert_eq!(classify_name(OsStr::new("README")), NameKind::Other);
        assert_eq!(
            classify_name(OsStr::new("metadata.json")),
            NameKind::Ignored
        );
        assert_eq!(classify_name(OsStr::new("error.json")), NameKind::Ignored);
    }

    #[test]
    fn image_waits_for_settle_then_sidecar_wait() {
        let mut intake = Intake::new(timings(), false);
        let t0 = Instant::now();
        assert!(intake.observe(Path::new("cat.png"), file(10), t0).is_some());
        assert!(
            intake.take_ready(t0 + 50 * MS, 10).is_empty(),
            "not settled yet"
        );
        assert!(
            intake.take_ready(t0 + 200 * MS, 10).is_empty(),
            "waiting for a sidecar"
        );
        let ready = intake.take_ready(t0 + 450 * MS, 10);
        assert!(matches!(
            &ready[..],
            [Decision::Image { sidecar: None, .. }]
        ));
        assert_eq!(intake.pending(), 0);
    }

    #[test]
    fn a_growing_file_is_not_ready() {
        let mut intake = Intake::new(timings(), true);
        let t0 = Instant::now();
        intake.observe(Path::new("cat.png"), file(10), t0);
        intake.observe(Path::new("cat.png"), file(20), t0 + 90 * MS);
        assert!(
            intake.take_ready(t0 + 150 * MS, 10).is_empty(),
            "size changed at 90ms"
        );
        assert_eq!(intake.take_ready(t0 + 200 * MS, 10).len(), 1);
    }

    #[test]
    fn late_sidecar_is_taken_with_its_image() {
        let mut intake = Intake::new(timings(), false);
        let t0 = Instant::now();
        intake.observe(Path::new("a/cat.png"), file(10), t0);
        assert!(
            intake
                .observe(Path::new("a/cat.yaml"), file(5), t0 + 200 * MS)
                .is_none()
        );
        assert!(
            intake.take_ready(t0 + 250 * MS, 10).is_empty(),
            "sidecar not settled"
        );
        let ready = intake.take_ready(t0 + 320 * MS, 10);
        match &ready[..] {
            [
                Decision::Image {
                    sidecar: Some(s), ..
                },
            ] => assert_eq!(s, Path::new("a/cat.yaml")),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(intake.tracked_paths().count(), 0);
    }

    #[test]
    fn full_name_sidecar_beats_stem_sidecar() {
        let mut intake = Intake::new(timings(), true);
        let t0 = Instant::now();
        intake.observe(Path::new("cat.png"), file(10), t0);
        intake.observe(Path::new("cat.yaml"), file(5), t0);
        intake.observe(Path::new("cat.png.txt"), file(5), t0);
        let ready = intake.take_ready(t0 + 150 * MS, 10);
        match &ready[..] {
            [
                Decision::Image {
                    sidecar: Some(s), ..
                },
            ] => assert_eq!(s, Path::new("cat.png.txt")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn orphan_sidecar_is_quarantined_after_orphan_after_but_left_in_once_mode() {
        let t0 = Instant::now();
        let mut daemon = Intake::new(timings(), false);
        daemon.observe(Path::new("dog.yaml"), file(5), t0);
        assert!(daemon.take_ready(t0 + 500 * MS, 10).is_empty());
        let ready = daemon.take_ready(t0 + 1100 * MS, 10);
        assert!(matches!(
            &ready[..],
            [Decision::Stray {
                reason: Reason::OrphanSidecar,
                ..
            }]
        ));

        let mut once = Intake::new(timings(), true);
        once.observe(Path::new("dog.yaml"), file(5), t0);
        assert!(once.take_ready(t0 + 5000 * MS, 10).is_empty());
        assert_eq!(once.pending(), 0, "--once waits for no missing image");
    }

    #[test]
    fn specials_and_unknown_files_become_strays() {
        let mut intake = Intake::new(timings(), false);
        let t0 = Instant::now();
        let special = Some(Snapshot {
            kind: EntryType::Special,
            size: 0,
            mtime: None,
            ctime_ns: 0,
        });
        intake.observe(Path::new("link.png"), special, t0);
        intake.observe(Path::new("notes.pdf"), file(3), t0);
        intake.observe(Path::new("_defaults.yaml"), file(3), t0);
        let mut reasons: Vec<_> = intake
            .take_ready(t0 + 150 * MS, 10)
            .into_iter()
            .map(|d| match d {
                Decision::Stray { reason, .. } => reason,
                Decision::Image { .. } => panic!("not an image"),
            })
            .collect();
        reasons.sort_by_key(|r| r.name());
        assert_eq!(
            reasons,
            vec![Reason::NotRegularFile, Reason::UnsupportedFormat]
        );
    }

    #[test]
    fn a_handed_over_entry_is_not_detected_again_before_its_claim() {
        let mut intake = Intake::new(timings(), true);
        let t0 = Instant::now();
        intake.observe(Path::new("cat.png"), file(1), t0);
        assert_eq!(intake.take_ready(t0 + 150 * MS, 1).len(), 1);
        assert!(
            intake
                .observe(Path::new("cat.png"), file(1), t0 + 160 * MS)
                .is_none()
        );
        assert_eq!(intake.pending(), 0);
        intake.observe(Path::new("cat.png"), None, t0 + 170 * MS);
        assert!(
            intake
                .observe(Path::new("cat.png"), file(1), t0 + 180 * MS)
                .is_some(),
            "a new file of that name is new"
        );
    }

    #[test]
    fn capacity_limits_how_many_are_handed_over() {
        let mut intake = Intake::new(timings(), true);
        let t0 = Instant::now();
        for i in 0..5 {
            intake.observe(Path::new(&format!("{i}.png")), file(1), t0);
        }
        assert_eq!(intake.take_ready(t0 + 150 * MS, 2).len(), 2);
        assert_eq!(intake.pending(), 3);
    }
}
