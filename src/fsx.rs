//! Durable file-system steps: write a file whole or not at all, rename and make the rename
//! survive power loss, and open inbox entries without following links. The journal,
//! `metadata.json` and `error.json` are written through nothing else.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

/// An I/O failure with what was being done and where, ready for a one-line message.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FsError {
    /// What was being done, e.g. "claiming into the work area".
    pub action: &'static str,
    /// The path acted on.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    /// Whether the failure is about the destination's space or writability (ENOSPC, EDQUOT,
    /// EROFS): never the file's fault, so the work waits instead of quarantining.
    #[must_use]
    pub fn is_local_capacity(&self) -> bool {
        is_capacity_error(&self.source)
    }
}

/// Whether an I/O error means "no space" or "read-only" (see [`FsError::is_local_capacity`]).
#[must_use]
pub fn is_capacity_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
    ) || matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Attaches an action and a path to an I/O result.
pub trait Context<T> {
    /// Wraps the error in an [`FsError`].
    ///
    /// # Errors
    /// The original error, wrapped.
    fn context(self, action: &'static str, path: &Path) -> Result<T, FsError>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, action: &'static str, path: &Path) -> Result<T, FsError> {
        self.map_err(|source| FsError {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Flushes a folder's entries (new names, renames) to disk.
///
/// # Errors
/// When the folder cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// As [`sync_dir`], for a folder many jobs change at once (the jobs folder, an inbox or
/// outbox folder): a caller waits for a sync that started after its own change, so jobs
/// changing the folder together share one `fsync` (group commit).
///
/// # Errors
/// When the folder cannot be opened or synced.
pub fn sync_dir_shared(dir: &Path) -> io::Result<()> {
    static SYNCS: OnceLock<SharedSyncs> = OnceLock::new();
    SYNCS.get_or_init(SharedSyncs::default).sync(dir)
}

/// Per folder: how many syncs were asked for, and how many of those the last finished sync
/// covered.
#[derive(Default)]
struct SharedSyncs {
    folders: Mutex<HashMap<PathBuf, SyncRound>>,
    done: Condvar,
}

#[derive(Default)]
struct SyncRound {
    asked: u64,
    covered: u64,
    running: bool,
}

impl SharedSyncs {
    fn sync(&self, dir: &Path) -> io::Result<()> {
        let mut folders = self.folders.lock().unwrap_or_else(PoisonError::into_inner);
        let round = folders.entry(dir.to_path_buf()).or_default();
        round.asked += 1;
        let mine = round.asked;
        loop {
            let round = folders.entry(dir.to_path_buf()).or_default();
            if round.covered >= mine {
                return Ok(());
            }
            if !round.running {
                // Everything asked until now changed the folder before this sync starts.
                round.running = true;
                let covers = round.asked;
                drop(folders);
                let synced = sync_dir(dir);
                folders = self.folders.lock().unwrap_or_else(PoisonError::into_inner);
                let round = folders.entry(dir.to_path_buf()).or_default();
                round.running = false;
                if synced.is_ok() {
                    round.covered = round.covered.max(covers);
                }
                self.done.notify_all();
                return synced;
            }
            folders = self
                .done
                .wait(folders)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` whole or not at all: a temporary file in the same folder,
/// written, synced, renamed over `path`, and the folder synced.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_file_in(parent_of(path))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(parent_of(path))
}

/// Replaces `path` with `bytes` in one rename, without syncing: readers see the old file or
/// the new one, never half of one, but a crash may leave the old one. For advisory files.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_file_in(parent_of(path))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Copies `from` to `to` whole or not at all (a synced temporary copy renamed into place),
/// streaming, so memory does not grow with the file's size.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn copy_durable(from: &Path, to: &Path) -> io::Result<()> {
    let dir = parent_of(to);
    let mut src = open_nofollow(from)?;
    let mut tmp = temp_file_in(dir)?;
    io::copy(&mut src, tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(to).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Writes `value` as pretty JSON, durably, passing the bytes through `finish` first (the
/// published files scrub the key there).
///
/// # Errors
/// Any I/O error, or a value that does not serialise.
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    finish: fn(Vec<u8>) -> Vec<u8>,
) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_durable(path, &finish(bytes))
}

/// A new hidden temporary file in `dir`, created 0666 less the umask like any other file
/// remixd makes: `tempfile`'s own 0600 would survive the rename into place and shut the
/// group out of `metadata.json` and `error.json`.
fn temp_file_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".part")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// Renames `from` to `to` and syncs both folders, so the rename survives a crash.
///
/// # Errors
/// Any I/O error from the rename or the syncs.
pub fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let (a, b) = (parent_of(from), parent_of(to));
    sync_dir(b)?;
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// Creates `dir` and its missing parents, syncing each parent whose entries changed.
///
/// # Errors
/// Any I/O error.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir_all_durable(parent)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => sync_dir_shared(parent_of(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens a regular file for reading without following a final symlink and without blocking
/// on a FIFO; the caller checks the opened descriptor's metadata, not the path's.
///
/// # Errors
/// `ELOOP` for a symlink, other I/O errors as they come.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Moves a folder to `to`, which may be on another filesystem: a plain rename when it can; else
/// a copy into a hidden temporary folder beside `to`, synced, renamed into place, and only
/// then the source removed. Every instant leaves either the source or the whole destination.
///
/// # Errors
/// Any I/O error; a half-made temporary copy is removed.
pub fn move_dir_durable(from: &Path, to: &Path) -> io::Result<()> {
    // The source's folder is not synced: should the old name come back after a crash,
    // recovery finds both and removes the source (src/job/journal.rs, step 6).
    match fs::rename(from, to) {
        Ok(()) => return sync_dir_shared(parent_of(to)),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(e),
    }
    let name = to
        .file_name()
        .map_or_else(|| "x".into(), |n| n.to_string_lossy().into_owned());
    let staging = parent_of(to).join(format!(".remixd-incoming-{name}"));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let copied = copy_tree_synced(from, &staging).and_then(|()| rename_durable(&staging, to));
    if let Err(e) = copied {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    fs::remove_dir_all(from)
}

fn copy_tree_synced(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree_synced(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            // Contents only: the copy gets remixd's own mode (umask applied), never a setuid or
            // setgid bit from whoever dropped the file.
            let mut src = open_nofollow(&entry.path())?;
            let mut dst = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)?;
            io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
        }
        // FIFOs, sockets and devices are never claimed as files to copy; a rename moves them.
    }
    sync_dir(to)
}

/// What kind of file system entry was seen (from `lstat`, never following links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file.
    File,
    /// A symlink, FIFO, socket or device.
    Special,
}

/// One `lstat` of an entry: what must stay the same for a file to count as settled, and
/// again when it is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// File or special.
    pub kind: EntryType,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Change time in nanoseconds (catches writes that restore the mtime).
    pub ctime_ns: i64,
    /// Inode number (catches a file replaced by another of the same size and times).
    pub ino: u64,
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
        let nanos = |secs: i64, nsec: i64| secs.saturating_mul(1_000_000_000).saturating_add(nsec);
        Some(Self {
            kind,
            size: meta.len(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_durable_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.json");
        write_durable(&path, b"one").expect("first write");
        write_durable(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(names.len(), 1);
    }

    /// The process umask, read without changing it (other tests run in parallel threads).
    fn current_umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .expect("an Umask: line (Linux 4.7 or newer)");
        u32::from_str_radix(line.trim(), 8).expect("octal umask")
    }

    /// Issue 11: `metadata.json` and `error.json` were 0600 whatever the umask, so the
    /// folders' group could not read them.
    #[test]
    fn durable_writes_follow_the_umask_not_tempfiles_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = dir.path().join("metadata.json");
        write_durable(&written, b"{}").expect("write");
        let copied = dir.path().join("copy.png");
        copy_durable(&written, &copied).expect("copy");
        let wanted = 0o666 & !current_umask();
        for path in [&written, &copied] {
            let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o7777;
            assert_eq!(mode, wanted, "{} is {mode:o}", path.display());
        }
    }

    #[test]
    fn open_nofollow_refuses_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("t");
        fs::write(&target, b"x").expect("write");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(open_nofollow(&link).is_err());
        assert!(open_nofollow(&target).is_ok());
    }

    #[test]
    fn move_dir_durable_moves_a_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("from");
        fs::create_dir_all(from.join("sub")).expect("mkdir");
        fs::write(from.join("sub/f"), b"data").expect("write");
        let to = dir.path().join("to");
        move_dir_durable(&from, &to).expect("move");
        assert!(!from.exists());
        assert_eq!(fs::read(to.join("sub/f")).expect("read"), b"data");
    }
}
