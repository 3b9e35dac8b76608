//! The page model and where it lives. Each process appends the rows of the jobs it finishes to
//! its own log, `<work_dir>/gallery/<owner>.jsonl`; every process's writer reads all the logs
//! incrementally (remembering how far it got in each) into the same in-memory model, so no
//! process's pages drop another's jobs, a dead process's rows stay, and no lock is needed.
//! The logs are advisory (not synced): a row lost in a crash is written again when the job's
//! end is resumed.
//!
//! Pages hold 100 jobs. Their boundaries are counted from the oldest job, so a new job changes
//! only the newest page (`index.html`, which holds the jobs since the last full hundred);
//! every page number moves once per hundred jobs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::row::Row;

/// Jobs per page.
pub(crate) const PAGE_SIZE: usize = 100;

/// Appends `row` as one line to `owner`'s log in `dir` (created with the umask's mode).
pub(crate) fn append(dir: &Path, owner: &str, row: &Row) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut line = serde_json::to_vec(row).map_err(std::io::Error::other)?;
    line = crate::secrets::scrub_bytes(line);
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{owner}.jsonl")))?;
    // One write with O_APPEND: a row is never interleaved with another.
    file.write_all(&line)
}

/// How far each owner's log has been read.
#[derive(Debug)]
pub(crate) struct Logs {
    dir: PathBuf,
    offsets: HashMap<OsString, u64>,
}

impl Logs {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            offsets: HashMap::new(),
        }
    }

    /// The rows appended to any log since the last call (complete lines only).
    pub(crate) fn read_new(&mut self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (name, len) in self.sizes() {
            let offset = self.offsets.get(&name).copied().unwrap_or(0);
            if len <= offset {
                continue;
            }
            let Ok(bytes) = read_from(&self.dir.join(&name), offset) else {
                continue;
            };
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            rows.extend(
                bytes[..complete]
                    .split(|b| *b == b'\n')
                    .filter_map(|line| serde_json::from_slice::<Row>(line).ok()),
            );
            self.offsets.insert(name, offset + complete as u64);
        }
        rows
    }

    /// Whether any log holds a complete line not read yet.
    pub(crate) fn grew(&self) -> bool {
        self.sizes()
            .into_iter()
            .any(|(name, len)| len > self.offsets.get(&name).copied().unwrap_or(0))
    }

    fn sizes(&self) -> Vec<(OsString, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
            .filter_map(|e| Some((e.file_name(), e.metadata().ok()?.len())))
            .collect()
    }
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

type Key = (String, String);

/// One list of jobs shown over numbered pages, oldest first in memory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    keys: Vec<Key>,
    /// The lowest position changed since the pages were last written.
    dirty_from: Option<usize>,
    /// How many pages were written last time (`None`: never).
    written: Option<usize>,
}

impl Listing {
    fn insert(&mut self, key: Key) {
        let at = match self.keys.last() {
            Some(last) if *last > key => self.keys.partition_point(|k| *k < key),
            _ => self.keys.len(),
        };
        self.keys.insert(at, key);
        self.dirty_from = Some(self.dirty_from.map_or(at, |d| d.min(at)));
    }

    /// Jobs in the list.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Pages the list fills (at least one, so an empty list still has its page).
    pub(crate) fn pages(&self) -> usize {
        self.keys.len().div_ceil(PAGE_SIZE).max(1)
    }

    /// Page `page` (1 = `index.html`, the newest), newest first.
    pub(crate) fn page(&self, page: usize) -> impl Iterator<Item = &Key> {
        let chunks = self.keys.len().div_ceil(PAGE_SIZE);
        let chunk = chunks.saturating_sub(page);
        let start = (chunk * PAGE_SIZE).min(self.keys.len());
        let end = ((chunk + 1) * PAGE_SIZE).min(self.keys.len());
        self.keys[start..end].iter().rev()
    }

    /// The pages to write: all when the number of pages changed (their numbers moved),
    /// else those from the newest down to the oldest one changed.
    pub(crate) fn dirty_pages(&self) -> Vec<usize> {
        let pages = self.pages();
        if self.written != Some(pages) {
            return (1..=pages).collect();
        }
        let Some(from) = self.dirty_from else {
            return Vec::new();
        };
        let chunks = self.keys.len().div_ceil(PAGE_SIZE);
        (1..=chunks.saturating_sub(from / PAGE_SIZE)).collect()
    }

    /// Records that every dirty page was written.
    pub(crate) fn written(&mut self) {
        self.written = Some(self.pages());
        self.dirty_from = None;
    }
}

/// Every finished job known, by list.
#[derive(Debug, Default)]
pub(crate) struct Model {
    rows: HashMap<String, Arc<Row>>,
    /// Every published job.
    pub(crate) all: Listing,
    /// Published jobs by `{subdir}` (the root's jobs are only in `all`).
    pub(crate) subdirs: BTreeMap<String, Listing>,
    /// Quarantined jobs.
    pub(crate) quarantined: Listing,
}

impl Model {
    /// Adds rows not seen before (a job's end logged twice after a crash counts once).
    pub(crate) fn add(&mut self, rows: Vec<Row>) {
        for row in rows {
            if self.rows.contains_key(&row.job_id) {
                continue;
            }
            let key = row.key();
            if row.quarantined {
                self.quarantined.insert(key);
            } else {
                if !row.subdir.is_empty() {
                    self.subdirs
                        .entry(row.subdir.clone())
                        .or_default()
                        .insert(key.clone());
                }
                self.all.insert(key);
            }
            self.rows.insert(row.job_id.clone(), Arc::new(row));
        }
    }

    /// The row of a key from one of the listings.
    pub(crate) fn row(&self, key: &Key) -> Option<&Row> {
        self.rows.get(&key.1).map(AsRef::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Key {
        (format!("2024-01-01T00:00:{n:06}Z"), format!("J{n:06}"))
    }

    #[test]
    fn pages_count_from_the_oldest_so_a_new_job_dirties_only_the_newest_page() {
        let mut list = Listing::default();
        for n in 0..250 {
            list.insert(key(n));
        }
        assert_eq!(list.pages(), 3);
        assert_eq!(list.dirty_pages(), [1, 2, 3]);
        assert_eq!(list.page(1).count(), 50);
        assert_eq!(list.page(1).next(), Some(&key(249)));
        assert_eq!(list.page(3).last(), Some(&key(0)));
        list.written();
        list.insert(key(250));
        assert_eq!(list.dirty_pages(), [1]);
        list.written();
        // A late row from another process lands in an older page: that page and the newer.
        list.insert(key(120));
        assert_eq!(list.dirty_pages(), [1, 2]);
        list.written();
        for n in 251..301 {
            list.insert(key(n + 1000));
        }
        assert_eq!(list.pages(), 4);
        assert_eq!(list.dirty_pages(), [1, 2, 3, 4]);
    }

    #[test]
    fn logs_are_read_incrementally_and_rows_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let row = |id: &str| Row {
            job_id: id.into(),
            at: "2024-01-01T00:00:00Z".into(),
            quarantined: false,
            subdir: "a".into(),
            dir: format!("a/x-{id}"),
            file: "x.png".into(),
            file_raw: None,
            size: None,
            outputs: vec![],
            prompt: None,
            operation: None,
            fields: vec![],
            cost_usd: None,
            provider: None,
            reason: None,
            message: None,
        };
        let mut logs = Logs::new(dir.path().to_path_buf());
        append(dir.path(), "p1", &row("A")).unwrap();
        append(dir.path(), "p2", &row("B")).unwrap();
        let mut model = Model::default();
        model.add(logs.read_new());
        assert!(!logs.grew());
        append(dir.path(), "p1", &row("A")).unwrap();
        assert!(logs.grew());
        model.add(logs.read_new());
        assert_eq!((model.all.len(), model.subdirs["a"].len()), (2, 2));
    }
}
