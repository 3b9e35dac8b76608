//! Noticing changes in the inbox: native events through `notify`, full scans (at start, every
//! `watch.rescan_interval`, after an overflow, and every `watch.poll_interval` when polling),
//! and the choice between them by filesystem type. What an entry *is* is [`crate::inbox`]'s
//! business; the timers live in [`crate::daemon`].
//!
//! notify's callback only classifies and `try_send`s; a full channel or an overflow raises a
//! flag that turns into a rescan, so no change is ever dropped silently.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::Watcher as _;
use tokio::sync::mpsc;

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
    /// Whether `path` (absolute) is inside the inbox and not hidden or excluded.
    #[must_use]
    pub fn relative(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.inbox).ok()?;
        if rel.as_os_str().is_empty() || self.exclude.iter().any(|e| path.starts_with(e)) {
            return None;
        }
        if rel
            .components()
            .any(|c| inbox::is_ignored_name(c.as_os_str()))
        {
            return None;
        }
        Some(rel.to_path_buf())
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

    /// Every entry below `rel` (`""` for the whole inbox), never following links.
    #[must_use]
    pub fn scan(&self, rel: &Path) -> Vec<(PathBuf, Snapshot)> {
        let mut found = Vec::new();
        let mut stack = vec![self.inbox.join(rel)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let Some(rel) = self.relative(&path) else {
                    continue;
                };
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                } else if let Some(snap) = Snapshot::from_metadata(&meta) {
                    found.push((rel, snap));
                }
            }
        }
        found
    }
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

/// How the inbox ended up being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Native events are on.
    pub native: bool,
    /// Full scans every poll interval are on.
    pub poll: bool,
    /// Why, for the log.
    pub why: String,
}

/// A running watcher. Dropping it stops the native events.
pub struct Watcher {
    _native: Option<notify::RecommendedWatcher>,
    overflow: Arc<AtomicBool>,
    degraded: Arc<AtomicBool>,
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
        self.overflow.swap(false, Ordering::AcqRel)
    }

    /// Whether native events became untrustworthy (the inotify watch limit was reached), so
    /// the inbox must be polled from now on.
    #[must_use]
    pub fn take_degraded(&self) -> bool {
        self.degraded.swap(false, Ordering::AcqRel)
    }
}

#[must_use]
/// Starts watching per `mode`: native events unless polling was asked for or the inbox is on
/// a network or FUSE filesystem (`auto`); a native watcher that cannot start (no inotify
/// watches left) falls back to polling.
pub fn start(scope: &Scope, mode: WatchMode, tx: mpsc::Sender<WatchMsg>) -> (Watcher, Chosen) {
    let overflow = Arc::new(AtomicBool::new(false));
    let degraded = Arc::new(AtomicBool::new(false));
    let network = network_fs_name(&scope.inbox);
    let wants_native = match mode {
        WatchMode::Poll => false,
        WatchMode::Native => true,
        WatchMode::Auto => network.is_none(),
    };
    let mut chosen = match (mode, &network) {
        (WatchMode::Poll, _) => Chosen {
            native: false,
            poll: true,
            why: "watch.mode is poll".into(),
        },
        (WatchMode::Native, _) => Chosen {
            native: true,
            poll: false,
            why: "watch.mode is native".into(),
        },
        (WatchMode::Auto, Some(fs)) => Chosen {
            native: false,
            poll: true,
            why: format!(
                "the inbox is on a {fs} filesystem, whose changes from other hosts native events never see"
            ),
        },
        (WatchMode::Auto, None) => Chosen {
            native: true,
            poll: false,
            why: "the inbox is on a local filesystem".into(),
        },
    };
    let native = if wants_native {
        match native_watcher(scope, tx, Arc::clone(&overflow), Arc::clone(&degraded)) {
            Ok(w) => Some(w),
            Err(e) => {
                chosen = Chosen {
                    native: false,
                    poll: true,
                    why: format!("native events could not start ({e}); polling instead"),
                };
                None
            }
        }
    } else {
        None
    };
    (
        Watcher {
            _native: native,
            overflow,
            degraded,
        },
        chosen,
    )
}

fn native_watcher(
    scope: &Scope,
    tx: mpsc::Sender<WatchMsg>,
    overflow: Arc<AtomicBool>,
    degraded: Arc<AtomicBool>,
) -> notify::Result<notify::RecommendedWatcher> {
    // remixd's own folders inside the inbox (the work area) change with every job step; their
    // events are dropped here so they cannot crowd out the inbox's.
    let exclude = scope.exclude.clone();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(event) if event.need_rescan() => overflow.store(true, Ordering::Release),
        Ok(event) => {
            for path in event.paths {
                if exclude.iter().any(|e| path.starts_with(e)) {
                    continue;
                }
                if tx.try_send(WatchMsg::Changed(path)).is_err() {
                    overflow.store(true, Ordering::Release);
                }
            }
        }
        Err(e) => {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                degraded.store(true, Ordering::Release);
            }
            overflow.store(true, Ordering::Release);
        }
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)?;
    watcher.watch(&scope.inbox, notify::RecursiveMode::Recursive)?;
    Ok(watcher)
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
