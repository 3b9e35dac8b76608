//! When an inbox entry is ready: settle detection by remixd's own clock, the wait for a late
//! sidecar, orphan sidecars, and the re-check at claim time. Pure bookkeeping over
//! observations and a `stat` the caller passes in; [`super::watch`] makes the observations
//! and [`super::intake_loop`] acts on the decisions.
//!
//! Cost follows the work, not the backlog. Every entry has at most one deadline in one ordered
//! set, so the loop can sleep until the earliest; an observation touches only the entry it
//! names; pairing an image with its sidecar is a hashed lookup by folder and name (and by
//! folder and stem the other way). A settled entry waiting for a job slot is not looked at
//! again until it is about to be claimed, when it is `stat`ed once more: a file rewritten in
//! the meantime goes back to settling.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{EntryType, NameKind, Snapshot, classify_name};
use crate::job::JobId;
use crate::job::verdict::Reason;
use index::{Folders, KeyBuf};
use pairing::{Pairing, stem};

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
        /// Inpaint mask (`STEM.mask.*`) path relative to the inbox.
        mask: Option<PathBuf>,
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

/// A new entry seen by [`Intake::observe`], for the `job.detected` log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Id given to it.
    pub job_id: JobId,
    /// Path relative to the inbox.
    pub path: PathBuf,
}

/// How long a handed-over entry still in the inbox is left to its job before it counts as
/// new again (the job gave up claiming it).
const HANDED_FOR: Duration = Duration::from_secs(600);

/// How many of the oldest ready entries a claim picks among (see [`Intake::take_ready`]).
const CLAIM_SPREAD: usize = 16;

type FolderId = u32;
type EntryId = u32;

/// Where an entry is in its life before the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Changed recently; due when it has held still for `settle`.
    Settling,
    /// A settled image with no sidecar; due when `sidecar_wait` is over.
    AwaitSidecar,
    /// A settled image whose sidecar is still settling; woken by the sidecar.
    AwaitPair,
    /// In the ready queue.
    Ready,
    /// A settled sidecar; due (when lone) at `orphan_after`.
    Held,
    /// Handed to a job at this instant; not detected again until seen gone.
    Handed(Instant),
}

#[derive(Debug)]
struct Entry {
    /// Folder id (4 bytes, little-endian) then the name: the key of [`Intake::by_name`].
    key: Arc<[u8]>,
    kind: NameKind,
    snap: Snapshot,
    job: ulid::Ulid,
    first_seen: Instant,
    stable_since: Instant,
    phase: Phase,
    due: Option<Instant>,
    /// The scan that last saw it, to find what a full scan or a poll no longer lists.
    seen: u32,
}

impl Entry {
    fn folder(&self) -> FolderId {
        let mut id = [0; 4];
        id.copy_from_slice(&self.key[..4]);
        FolderId::from_le_bytes(id)
    }

    fn name(&self) -> &[u8] {
        &self.key[4..]
    }

    /// A sidecar or a mask: a file that goes with an image, never a job of its own (unless
    /// its image never comes).
    fn is_companion(&self) -> bool {
        matches!(self.kind, NameKind::Sidecar(_) | NameKind::Mask)
            && self.snap.kind == EntryType::File
    }

    /// Counts in `pending`: everything that will become a job. A sidecar or mask does only
    /// through its image, or once it is a ready orphan.
    fn counts(&self) -> bool {
        match self.phase {
            Phase::Handed(_) => false,
            Phase::Ready => true,
            _ => !self.is_companion(),
        }
    }
}

/// The inbox entries seen and not yet handed over, with their deadlines.
#[derive(Debug)]
pub struct Intake {
    timings: IntakeTimings,
    once: bool,
    folders: Folders,
    slots: Vec<Option<Entry>>,
    free: Vec<EntryId>,
    by_name: HashMap<Arc<[u8]>, EntryId>,
    /// Images by folder and stem (name without its extension): who takes `STEM.yaml`.
    images_by_stem: HashMap<Box<[u8]>, Vec<EntryId>>,
    deadlines: BTreeSet<(Instant, EntryId)>,
    ready: VecDeque<EntryId>,
    pending: usize,
    scan: u32,
}

impl Intake {
    /// An empty intake. With `once`, nothing waits for a sidecar that is not there and orphan
    /// sidecars are left alone.
    #[must_use]
    pub fn new(timings: IntakeTimings, once: bool) -> Self {
        Self {
            timings,
            once,
            folders: Folders::default(),
            slots: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            images_by_stem: HashMap::new(),
            deadlines: BTreeSet::new(),
            ready: VecDeque::new(),
            pending: 0,
            scan: 0,
        }
    }

    /// Changes the timings (config reload). Deadlines already set keep their time.
    pub fn set_timings(&mut self, timings: IntakeTimings) {
        self.timings = timings;
    }

    /// Entries that will still become jobs: images and strays not yet handed over.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Entries tracked at all, handed-over ones included.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.by_name.len()
    }

    /// When the next deadline falls, if any entry has one.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Whether an entry waits in the ready queue (the loop then waits for a job slot).
    #[must_use]
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
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
            if let Some(id) = self.lookup(rel) {
                self.remove(id, now);
            }
            return None;
        };
        if let Some(id) = self.lookup(rel) {
            let scan = self.scan;
            let entry = self.entry_mut(id);
            entry.seen = scan;
            let (phase, changed) = (entry.phase, entry.snap != snap);
            match phase {
                Phase::Handed(at) if now.duration_since(at) < HANDED_FOR => return None,
                Phase::Handed(_) => self.remove(id, now),
                _ => {
                    if changed {
                        self.unsettle(id, snap, now);
                    }
                    return None;
                }
            }
        }
        self.insert(rel, snap, now)
    }

    /// Marks `rel` as listed by the scan under way; `false` when it is not tracked (the
    /// caller then `stat`s it and [`Intake::observe`]s it).
    pub fn touch(&mut self, rel: &Path) -> bool {
        let Some(id) = self.lookup(rel) else {
            return false;
        };
        let scan = self.scan;
        self.entry_mut(id).seen = scan;
        true
    }

    /// Ends a full scan or poll: forgets what it did not list, except in `unlisted` folders
    /// (which could not be read this time), and starts the next scan's count.
    pub fn sweep(&mut self, unlisted: &[PathBuf], now: Instant) {
        let skip: Vec<FolderId> = unlisted
            .iter()
            .filter_map(|f| self.folders.ids.get(f).copied())
            .collect();
        let scan = self.scan;
        let gone: Vec<EntryId> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(id, e)| Some((id, e.as_ref()?)))
            .filter(|(_, e)| e.seen != scan && !skip.contains(&e.folder()))
            .filter_map(|(id, _)| EntryId::try_from(id).ok())
            .collect();
        for id in gone {
            self.remove(id, now);
        }
        self.scan = self.scan.wrapping_add(1);
    }

    /// Settles what is due at `now`, re-`stat`ing (through `stat`) only entries whose settle
    /// time is up. Ready entries queue for [`Intake::take_ready`].
    pub fn advance(&mut self, now: Instant, stat: &mut dyn FnMut(&Path) -> Option<Snapshot>) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.entry_mut(id).due = None;
            match self.entry(id).phase {
                Phase::Settling => {
                    let rel = self.path_of(id);
                    match stat(&rel) {
                        None => self.remove(id, now),
                        Some(snap) if snap != self.entry(id).snap => self.unsettle(id, snap, now),
                        Some(_) => self.settled(id, at),
                    }
                }
                Phase::AwaitSidecar => self.make_ready(id),
                Phase::Held => self.orphan_check(id, now),
                Phase::AwaitPair | Phase::Ready | Phase::Handed(_) => {}
            }
        }
    }

    /// Up to `capacity` entries ready to claim, each `stat`ed once more first (size, times
    /// and inode unchanged, else it goes back to settling), handed over and no longer pending.
    pub fn take_ready(
        &mut self,
        now: Instant,
        capacity: usize,
        stat: &mut dyn FnMut(&Path) -> Option<Snapshot>,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        while out.len() < capacity {
            // Oldest first, but not in lockstep with other processes on this inbox: they see
            // the same files become ready in the same order, and taking the same one at the
            // same moment wastes a claim. A pick among the next few spreads them out.
            let window = self.ready.len().min(CLAIM_SPREAD);
            if window == 0 {
                break;
            }
            let Some(id) = self.ready.swap_remove_front(fastrand::usize(..window)) else {
                break;
            };
            if self.slot(id).is_none_or(|e| e.phase != Phase::Ready) {
                continue;
            }
            if let Some(decision) = self.claimable(id, now, stat) {
                out.push(decision);
            }
        }
        out
    }

    fn claimable(
        &mut self,
        id: EntryId,
        now: Instant,
        stat: &mut dyn FnMut(&Path) -> Option<Snapshot>,
    ) -> Option<Decision> {
        if !self.unchanged(id, now, stat) {
            return None;
        }
        let rel = self.path_of(id);
        let entry = self.entry(id);
        let (job_id, detected_at) = (JobId::from_ulid(entry.job), entry.job.datetime());
        let reason = match (entry.kind, entry.snap.kind) {
            (_, EntryType::Special) => Reason::NotRegularFile,
            (NameKind::Image, EntryType::File) => {
                let (sidecar, mask) = self.companions(id, now, stat)?;
                self.hand(id, now);
                return Some(Decision::Image {
                    job_id,
                    detected_at,
                    image: rel,
                    sidecar,
                    mask,
                });
            }
            (NameKind::Sidecar(_) | NameKind::Mask, EntryType::File) => Reason::OrphanSidecar,
            (_, EntryType::File) => Reason::UnsupportedFormat,
        };
        self.hand(id, now);
        Some(Decision::Stray {
            job_id,
            detected_at,
            path: rel,
            reason,
        })
    }

    /// The image's sidecar and mask, re-checked and handed over with it; `None` when one of
    /// them changed or went since it settled: the image then waits for it (or for what is
    /// left of `sidecar_wait`) again.
    fn companions(
        &mut self,
        image: EntryId,
        now: Instant,
        stat: &mut dyn FnMut(&Path) -> Option<Snapshot>,
    ) -> Option<(Option<PathBuf>, Option<PathBuf>)> {
        let mut found = [None, None];
        for (slot, pairing) in found
            .iter_mut()
            .zip([self.sidecar_of(image), self.mask_of(image)])
        {
            match pairing {
                Pairing::Settled(c) if self.unchanged(c, now, stat) => *slot = Some(c),
                Pairing::Settled(_) | Pairing::Settling => {
                    self.set_phase(image, Phase::AwaitPair);
                    self.wake_image(image, now);
                    return None;
                }
                Pairing::None => {}
            }
        }
        let [sidecar, mask] = found.map(|c| {
            c.map(|c| {
                self.hand(c, now);
                self.path_of(c)
            })
        });
        Some((sidecar, mask))
    }

    /// The claim-time re-check: `true` when `stat` still shows what settled. Otherwise the
    /// entry settles again (or is forgotten when gone).
    fn unchanged(
        &mut self,
        id: EntryId,
        now: Instant,
        stat: &mut dyn FnMut(&Path) -> Option<Snapshot>,
    ) -> bool {
        match stat(&self.path_of(id)) {
            None => {
                self.remove(id, now);
                false
            }
            Some(snap) if snap != self.entry(id).snap => {
                self.unsettle(id, snap, now);
                false
            }
            Some(_) => true,
        }
    }

    fn insert(&mut self, rel: &Path, snap: Snapshot, now: Instant) -> Option<Detected> {
        let name = rel.file_name()?;
        let kind = classify_name(name);
        if matches!(kind, NameKind::Ignored | NameKind::Defaults) {
            return None;
        }
        let folder = self.folders.intern(rel.parent().unwrap_or(Path::new("")));
        let key: Arc<[u8]> = KeyBuf::new(folder, name.as_bytes()).bytes().into();
        let entry = Entry {
            key: Arc::clone(&key),
            kind,
            snap,
            job: ulid::Ulid::new(),
            first_seen: now,
            stable_since: now,
            phase: Phase::Settling,
            due: None,
            seen: self.scan,
        };
        let job = entry.job;
        let detected = !entry.is_companion();
        if entry.counts() {
            self.pending += 1;
        }
        let id = if let Some(id) = self.free.pop() {
            self.slots[id as usize] = Some(entry);
            id
        } else {
            self.slots.push(Some(entry));
            EntryId::try_from(self.slots.len() - 1).unwrap_or(EntryId::MAX)
        };
        if kind == NameKind::Image {
            let stem_key = KeyBuf::new(folder, stem(name.as_bytes()));
            self.images_by_stem
                .entry(stem_key.bytes().into())
                .or_default()
                .push(id);
        }
        self.by_name.insert(key, id);
        self.set_due(id, Some(now + self.timings.settle));
        if matches!(kind, NameKind::Sidecar(_) | NameKind::Mask) {
            // An image that was going to go on without a sidecar now waits for this one.
            self.wake_images_of(folder, name.as_bytes(), now);
        }
        detected.then(|| Detected {
            job_id: JobId::from_ulid(job),
            path: rel.to_path_buf(),
        })
    }

    fn remove(&mut self, id: EntryId, now: Instant) {
        self.set_due(id, None);
        let Some(entry) = self.slots[id as usize].take() else {
            return;
        };
        self.free.push(id);
        if entry.counts() {
            self.pending -= 1;
        }
        if entry.kind == NameKind::Image {
            let stem_key = KeyBuf::new(entry.folder(), stem(entry.name()));
            if let Some(ids) = self.images_by_stem.get_mut(stem_key.bytes()) {
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    self.images_by_stem.remove(stem_key.bytes());
                }
            }
        }
        self.by_name.remove(&entry.key);
        if entry.is_companion() {
            self.wake_images_of(entry.folder(), entry.name(), now);
        }
    }

    /// The entry changed: it settles again from `now`.
    fn unsettle(&mut self, id: EntryId, snap: Snapshot, now: Instant) {
        let entry = self.entry_mut(id);
        entry.snap = snap;
        entry.stable_since = now;
        let was_companion = entry.is_companion();
        self.set_phase(id, Phase::Settling);
        self.set_due(id, Some(now + self.timings.settle));
        if was_companion {
            let (folder, name) = (self.entry(id).folder(), self.entry(id).name().to_vec());
            self.wake_images_of(folder, &name, now);
        }
    }

    /// `id` held still from `stable_since` until `at`.
    fn settled(&mut self, id: EntryId, at: Instant) {
        let entry = self.entry(id);
        let (folder, name) = (entry.folder(), entry.name().to_vec());
        match (entry.kind, entry.snap.kind) {
            (NameKind::Image, EntryType::File) => {
                self.set_phase(id, Phase::AwaitPair);
                self.wake_image(id, at);
            }
            (NameKind::Sidecar(_) | NameKind::Mask, EntryType::File) => {
                self.set_phase(id, Phase::Held);
                self.arm_orphan(id, at);
                self.wake_images_of(folder, &name, at);
            }
            _ => self.make_ready(id),
        }
    }

    /// A settled sidecar no image takes becomes an orphan at `orphan_after` (never in `once`
    /// mode, which waits for no image that is not there).
    fn arm_orphan(&mut self, id: EntryId, now: Instant) {
        if self.once {
            return;
        }
        let due = (self.entry(id).first_seen + self.timings.orphan_after).max(now);
        self.set_due(id, Some(due));
    }

    fn orphan_check(&mut self, id: EntryId, now: Instant) {
        let entry = self.entry(id);
        if self.images_wanting(entry.folder(), entry.name()).is_empty() {
            self.make_ready(id);
        } else {
            // An image takes it for now; look again later in case that image goes away.
            self.set_due(id, Some(now + self.timings.orphan_after));
        }
    }

    fn make_ready(&mut self, id: EntryId) {
        self.set_due(id, None);
        self.set_phase(id, Phase::Ready);
        self.ready.push_back(id);
    }

    fn hand(&mut self, id: EntryId, now: Instant) {
        self.set_due(id, None);
        self.set_phase(id, Phase::Handed(now));
    }

    /// Changes an entry's phase, keeping the `pending` count in step.
    fn set_phase(&mut self, id: EntryId, phase: Phase) {
        let entry = self.entry_mut(id);
        let before = entry.counts();
        entry.phase = phase;
        let after = entry.counts();
        match (before, after) {
            (false, true) => self.pending += 1,
            (true, false) => self.pending -= 1,
            _ => {}
        }
    }
}

mod index;
mod pairing;
#[cfg(test)]
mod tests;
