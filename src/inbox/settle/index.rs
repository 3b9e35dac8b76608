//! Where the intake keeps its entries: a slab of entries with ids, names interned as a
//! folder id and the name's bytes (one hashed key, built on the stack for lookups), and the
//! one ordered set of deadlines.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::{Entry, EntryId, FolderId, Intake};

impl Intake {
    pub(super) fn set_due(&mut self, id: EntryId, due: Option<Instant>) {
        let Some(entry) = self.slots[id as usize].as_mut() else {
            return;
        };
        if let Some(old) = entry.due.take() {
            self.deadlines.remove(&(old, id));
        }
        entry.due = due;
        if let Some(at) = due {
            self.deadlines.insert((at, id));
        }
    }

    pub(super) fn lookup(&self, rel: &Path) -> Option<EntryId> {
        let folder = *self
            .folders
            .ids
            .get(rel.parent().unwrap_or(Path::new("")))?;
        let name = rel.file_name()?.as_bytes();
        self.by_name.get(KeyBuf::new(folder, name).bytes()).copied()
    }

    pub(super) fn path_of(&self, id: EntryId) -> PathBuf {
        let entry = self.entry(id);
        self.folders
            .path(entry.folder())
            .join(OsStr::from_bytes(entry.name()))
    }

    pub(super) fn slot(&self, id: EntryId) -> Option<&Entry> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    #[allow(clippy::expect_used)] // ids come only from the indexes, which hold live entries
    pub(super) fn entry(&self, id: EntryId) -> &Entry {
        self.slot(id).expect("a live entry id")
    }

    #[allow(clippy::expect_used)]
    pub(super) fn entry_mut(&mut self, id: EntryId) -> &mut Entry {
        self.slots[id as usize].as_mut().expect("a live entry id")
    }
}

/// A hash key of a folder id and a name, built on the stack for lookups (names are at most
/// 255 bytes on every filesystem remixd serves; longer ones go to the heap).
pub(super) struct KeyBuf {
    stack: [u8; 4 + 255],
    heap: Vec<u8>,
    len: usize,
}

impl KeyBuf {
    pub(super) fn new(folder: FolderId, name: &[u8]) -> Self {
        let mut key = Self {
            stack: [0; 4 + 255],
            heap: Vec::new(),
            len: 4 + name.len(),
        };
        if name.len() <= 255 {
            key.stack[..4].copy_from_slice(&folder.to_le_bytes());
            key.stack[4..key.len].copy_from_slice(name);
        } else {
            key.heap.extend_from_slice(&folder.to_le_bytes());
            key.heap.extend_from_slice(name);
        }
        key
    }

    pub(super) fn bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Folder paths relative to the inbox, interned: entries keep a 4-byte id, not a path.
#[derive(Debug, Default)]
pub(super) struct Folders {
    pub(super) paths: Vec<PathBuf>,
    pub(super) ids: HashMap<PathBuf, FolderId>,
}

impl Folders {
    pub(super) fn intern(&mut self, folder: &Path) -> FolderId {
        if let Some(&id) = self.ids.get(folder) {
            return id;
        }
        let id = FolderId::try_from(self.paths.len()).unwrap_or(FolderId::MAX);
        self.paths.push(folder.to_path_buf());
        self.ids.insert(folder.to_path_buf(), id);
        id
    }

    pub(super) fn path(&self, id: FolderId) -> &Path {
        &self.paths[id as usize]
    }
}
