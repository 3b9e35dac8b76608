//! Noticing changes in the inbox: native events through `notify`, folder listings every
//! `watch.poll_interval` when polling, full reconcile scans (at start, every
//! `watch.rescan_interval`, after an overflow), and the choice between them by filesystem
//! type. What an entry *is* is [`crate::inbox`]'s business; the timers live in
//! [`super::intake_loop`].
//!
//! notify's callback only classifies and `try_send`s; a full channel or an overflow raises a
//! flag and wakes the loop, which turns it into a rescan, so no change is ever dropped
//! silently. Each folder the inbox covers gets its own watch, added by the scan that reads it
//! just before the read: remixd's work area (by default `<inbox>/.remixd`), hidden folders
//! and asset folders are never watched, so a job's own steps raise no events. A poll only
//! reads folders (`readdir`): what it finds new is `stat`ed, and what is still settling is
//! `stat`ed when its deadline comes, never everything on every poll.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::Watcher as _;
use tokio::sync::{Notify, mpsc};

use crate::config::WatchMode;
use crate::inbox::{self, Snapshot};

/// Why a full scan runs (the `reason` of `watch.rescan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescanReason {
    /// At start.
    Start,
    /// Every `watch.rescan_interval`.
    Interval,
    /// After an event-queue overflow or a watcher error.
    Overflow,
    /// Every `watch.poll_interval` in poll mode.
    Poll,
}

impl RescanReason {
    /// The name logged.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Interval => "interval",
            Self::Overflow => "overflow",
            Self::Poll => "poll",
        }
    }
}

/// What the inbox covers: its root and the folders inside it that remixd owns.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The inbox root.
    pub inbox: PathBuf,
    /// Folders never scanned (work area, outbox, quarantine when inside the inbox).
    pub exclude: Vec<PathBuf>,
}

impl Scope {
    /// Whether `path` (absolute) is inside the inbox and not hidden, excluded or inside an
    /// asset folder (`_refs/`).
    #[must_use]
    pub fn relative(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.inbox).ok()?;
        if rel.as_os_str().is_empty() || self.exclude.iter().any(|e| path.starts_with(e)) {
            return None;
        }
        let mut parts = rel.components().peekable();
        while let Some(part) = parts.next() {
            let name = part.as_os_str();
            let is_folder = parts.peek().is_some();
            if inbox::is_ignored_name(name) || (is_folder && inbox::is_asset_folder(name)) {
                return None;
            }
        }
        Some(rel.to_path_buf())
    }

    /// Whether a folder found in a scan is one remixd leaves alone: hidden, excluded, or an
    /// asset folder.
    fn skips_folder(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|name| inbox::is_ignored_name(name) || inbox::is_asset_folder(name))
            || self.exclude.iter().any(|e| path.starts_with(e))
    }

    /// The asset folders (`_refs/`, `brand/_refs/`) in the inbox, relative to it, sorted:
    /// shared files that references name and that are never jobs. Read with `readdir` alone,
    /// once at start; what is inside an asset folder is part of it.
    #[must_use]
    pub fn asset_folders(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(self.inbox.join(&dir)) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let is_excluded = self.exclude.iter().any(|e| entry.path().starts_with(e));
                if inbox::is_ignored_name(&name) || is_excluded {
                    continue;
                }
                if inbox::is_asset_folder(&name) {
                    found.push(dir.join(&name));
                } else {
                    stack.push(dir.join(&name));
                }
            }
        }
        found.sort();
        found
    }

    /// `lstat` of an inbox entry.
    #[must_use]
    pub fn stat(&self, rel: &Path) -> Entry {
        match fs::symlink_metadata(self.inbox.join(rel)) {
            Ok(meta) if meta.is_dir() => Entry::Folder,
            Ok(meta) => Snapshot::from_metadata(&meta).map_or(Entry::Gone, Entry::Seen),
            Err(_) => Entry::Gone,
        }
    }

    /// `lstat` of an entry expected to be a file: `None` when it is gone or now a folder.
    #[must_use]
    pub fn stat_file(&self, rel: &Path) -> Option<Snapshot> {
        match self.stat(rel) {
            Entry::Seen(snap) => Some(snap),
            Entry::Gone | Entry::Folder => None,
        }
    }

    /// Every entry below `rel` (`""` for the whole inbox), `lstat`ed, never following links;
    /// and the folders that could not be read this time.
    #[must_use]
    pub fn scan(&self, rel: &Path) -> Scan {
        self.scan_watching(rel, &mut |_| {})
    }

    /// [`Scope::scan`], handing each folder to `watch` just before it is read: a file created
    /// after the watch raises an event, one created before is in the listing.
    #[must_use]
    pub fn scan_watching(&self, rel: &Path, watch: &mut dyn FnMut(&Path)) -> Scan {
        let mut scan = Scan::default();
        self.walk(
            rel,
            watch,
            |dir, entries| {
                for name in entries {
                    let rel = dir.join(&name);
                    if let Ok(meta) = fs::symlink_metadata(self.inbox.join(&rel)) {
                        if let Some(snap) = Snapshot::from_metadata(&meta) {
                            scan.found.push((rel, snap));
                        }
                    }
                }
            },
            &mut scan.unlisted,
        );
        scan
    }

    /// The names of every file below the inbox, folder by folder, read with `readdir` alone
    /// (no `stat`): what a poll compares with what it knows.
    #[must_use]
    pub fn list(&self) -> Listing {
        let mut listing = Listing::default();
        self.walk(
            Path::new(""),
            &mut |_| {},
            |dir, entries| {
                listing.folders.push((dir.to_path_buf(), entries));
            },
            &mut listing.unlisted,
        );
        listing
    }

    /// Reads every folder below `rel` once, handing it to `before_read` first and then the
    /// names of its non-folder entries to `visit`.
    fn walk(
        &self,
        rel: &Path,
        before_read: &mut dyn FnMut(&Path),
        mut visit: impl FnMut(&Path, Vec<OsString>),
        unlisted: &mut Vec<PathBuf>,
    ) {
        let mut stack = vec![rel.to_path_buf()];
        while let Some(dir) = stack.pop() {
            before_read(&dir);
            let Ok(entries) = fs::read_dir(self.inbox.join(&dir)) else {
                unlisted.push(dir);
                continue;
            };
            let mut files = Vec::new();
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    let path = entry.path();
                    if !self.skips_folder(&path) {
                        stack.push(dir.join(&name));
                    }
                } else if !inbox::is_ignored_name(&name) {
                    files.push(name);
                }
            }
            visit(&dir, files);
        }
    }
}

/// What a full scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every file and special entry, relative to the inbox, with its `lstat`.
    pub found: Vec<(PathBuf, Snapshot)>,
    /// Folders that could not be read (their entries are not known to be gone).
    pub unlisted: Vec<PathBuf>,
}

/// What a poll read: the entry names of each folder.
#[derive(Debug, Default)]
pub struct Listing {
    /// Each folder (relative to the inbox) and the names in it.
    pub folders: Vec<(PathBuf, Vec<OsString>)>,
    /// Folders that could not be read.
    pub unlisted: Vec<PathBuf>,
}

/// What `lstat` found at an inbox path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Nothing there (any more).
    Gone,
    /// A folder.
    Folder,
    /// A file or special entry.
    Seen(Snapshot),
}

/// A message from the watcher to the intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    /// Something happened at this absolute path.
    Changed(PathBuf),
}

/// How changes in the inbox are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Native events (inotify), with reconcile scans.
    Native,
    /// Folder listings every `watch.poll_interval`, with reconcile scans.
    Poll,
    /// `--once`: one scan at start, nothing watched.
    Once,
}

impl Mode {
    /// The name logged as `watch_mode`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Poll => "poll",
            Self::Once => "once",
        }
    }
}

/// How the inbox ended up being watched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The mode.
    pub mode: Mode,
    /// Why, for the log.
    pub why: String,
}

/// A running watcher. Dropping it stops the native events.
pub struct Watcher {
    native: Option<notify::RecommendedWatcher>,
    flags: Arc<Flags>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Whether events were lost since the last call (queue full, overflow, watcher error).
    #[must_use]
    pub fn take_overflow(&self) -> bool {
        self.flags.overflow.swap(false, Ordering::AcqRel)
    }

    /// Whether native events became untrustworthy (the inotify watch limit was reached), so
    /// the inbox must be polled from now on.
    #[must_use]
    pub fn take_degraded(&self) -> bool {
        self.flags.degraded.swap(false, Ordering::AcqRel)
    }

    /// Resolves when the watcher has raised a flag ([`Watcher::take_overflow`],
    /// [`Watcher::take_degraded`]) since the last call.
    pub async fn flagged(&self) {
        self.flags.wake.notified().await;
    }

    /// Watches one folder's own entries (`folder` absolute). Watching a folder twice is one
    /// watch; a folder gone meanwhile is skipped (its parent's event or the next scan says
    /// so); running out of inotify watches raises the degraded flag.
    pub fn watch_folder(&mut self, folder: &Path) {
        let Some(native) = &mut self.native else {
            return;
        };
        if let Err(e) = native.watch(folder, notify::RecursiveMode::NonRecursive) {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                self.flags.raise(true);
            } else {
                tracing::debug!(folder = %folder.display(), error = %e, "folder not watched");
            }
        }
    }
}

#[must_use]
/// Starts watching per `mode`: native events unless polling was asked for or the inbox is on
/// a network or FUSE filesystem (`auto`); a native watcher that cannot start (no inotify
/// watches left) falls back to polling.
pub fn start(scope: &Scope, mode: WatchMode, tx: mpsc::Sender<WatchMsg>) -> (Watcher, Chosen) {
    let network = network_fs_name(&scope.inbox);
    let wants_native = match mode {
        WatchMode::Poll => false,
        WatchMode::Native => true,
        WatchMode::Auto => network.is_none(),
    };
    let mut chosen = match (mode, &network) {
        (WatchMode::Poll, _) => Chosen {
            mode: Mode::Poll,
            why: "watch.mode is poll".into(),
        },
        (WatchMode::Native, _) => Chosen {
            mode: Mode::Native,
            why: "watch.mode is native".into(),
        },
        (WatchMode::Auto, Some(fs)) => Chosen {
            mode: Mode::Poll,
            why: format!(
                "the inbox is on a {fs} filesystem, whose changes from other hosts native events never see"
            ),
        },
        (WatchMode::Auto, None) => Chosen {
            mode: Mode::Native,
            why: "the inbox is on a local filesystem".into(),
        },
    };
    let flags = Arc::new(Flags::default());
    let native = if wants_native {
        match native_watcher(scope, tx, Arc::clone(&flags)) {
            Ok(w) => Some(w),
            Err(e) => {
                chosen = Chosen {
                    mode: Mode::Poll,
                    why: format!("native events could not start ({e}); polling instead"),
                };
                None
            }
        }
    } else {
        None
    };
    (Watcher { native, flags }, chosen)
}

/// What notify's callback raises when events cannot be trusted, and how it wakes the loop.
#[derive(Default)]
struct Flags {
    overflow: AtomicBool,
    degraded: AtomicBool,
    wake: Notify,
}

impl Flags {
    fn raise(&self, degraded: bool) {
        if degraded {
            self.degraded.store(true, Ordering::Release);
        }
        self.overflow.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

fn native_watcher(
    scope: &Scope,
    tx: mpsc::Sender<WatchMsg>,
    flags: Arc<Flags>,
) -> notify::Result<notify::RecommendedWatcher> {
    // remixd's own folders inside the inbox are never watched (see `Watcher::watch_folder`);
    // a watch a user's folder shares with one of them (the outbox inside the inbox) still
    // reports its name, which is dropped here.
    let exclude = scope.exclude.clone();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(event) if event.need_rescan() => flags.raise(false),
        // Opening and reading (remixd's own scans open every folder) change nothing; passing
        // them on would make each scan trigger the next.
        Ok(event) if !changes_content(event.kind) => {}
        Ok(event) => {
            for path in event.paths {
                if exclude.iter().any(|e| path.starts_with(e)) {
                    continue;
                }
                if tx.try_send(WatchMsg::Changed(path)).is_err() {
                    flags.raise(false);
                }
            }
        }
        Err(e) => flags.raise(matches!(e.kind, notify::ErrorKind::MaxFilesWatch)),
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)?;
    // Only the root here: the start scan watches each folder below it as it reads it. A
    // recursive watch would also cover the work area, whose every job step would raise
    // events (and a new watch per job folder) only to be dropped.
    watcher.watch(&scope.inbox, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether an event kind can mean an entry appeared, changed or went away.
fn changes_content(kind: notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(access) => access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// The name of the network or FUSE filesystem `path` is on, if it is on one.
#[must_use]
pub fn network_fs_name(path: &Path) -> Option<&'static str> {
    let stat = rustix::fs::statfs(path).ok()?;
    // statfs f_type magic numbers from linux/magic.h and the filesystems' own headers.
    #[allow(clippy::unreadable_literal)]
    let name = match stat.f_type as i64 {
        0x6969 => "nfs",
        0x517B => "smb",
        0xFF534D42 => "cifs",
        0xFE534D42 => "smb2",
        0x65735546 => "fuse",
        0x00C36400 => "ceph",
        0x5346414F => "afs",
        0x01021997 => "9p",
        0x73757245 => "coda",
        0x564C => "ncp",
        0x47504653 => "gpfs",
        0x0BD00BD0 => "lustre",
        _ => return None,
    };
    Some(name)
}
