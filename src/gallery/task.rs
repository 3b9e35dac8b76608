//! The writer task: waits for a change, lets `output.gallery_delay` collect more, then reads
//! the new rows of every process's log and rewrites the pages they changed, off the async
//! threads. After writing it checks the logs again: a row another process logged meanwhile
//! is written at once, so whichever process writes last, its pages hold every row.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::now::{self, Now};
use super::render::{self, ASSETS_DIR, Page, page_name};
use super::store::{Listing, Logs, Model};
use super::{Gallery, Shared};
use crate::api::PauseReason;
use crate::config::Config;

/// While the "now" box has something to say, it is rewritten this often (as often as the
/// page reloads itself), so stages and waiting times stay current.
const NOW_REFRESH: Duration = Duration::from_secs(30);

/// Rewrites after a write found new rows, before waiting for the next change.
const CATCH_UP_ROUNDS: usize = 3;

/// What the writer reads from the running daemon each time it writes.
pub struct Live {
    /// The config in force: a reload can switch the gallery off or change its delay.
    pub config: Box<dyn Fn() -> Arc<Config> + Send + Sync>,
    /// Why submissions are paused, if they are.
    pub paused: Box<dyn Fn() -> Option<PauseReason> + Send + Sync>,
}

impl Gallery {
    /// Writes the pages now, then after every change (debounced), until `stop`; then writes
    /// them once more so they show every job that ended before it (`--once`, a stop).
    pub async fn run(self, live: Live, stop: CancellationToken) {
        let mut writer = Writer::new(Arc::clone(&self.shared));
        let mut busy = false;
        let mut first = true;
        loop {
            let config = (live.config)();
            if !first {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = self.shared.changed.notified() => {
                        tokio::select! {
                            () = tokio::time::sleep(config.gallery_delay) => {}
                            () = stop.cancelled() => break,
                        }
                    }
                    () = tokio::time::sleep(NOW_REFRESH), if busy => {}
                }
            }
            first = false;
            if config.gallery {
                (writer, busy) = write(writer, (live.paused)()).await;
            }
        }
        if (live.config)().gallery {
            write(writer, (live.paused)()).await;
        }
    }
}

/// Runs one write on a blocking thread; a writer lost to a panic is replaced by a fresh one.
async fn write(mut writer: Writer, paused: Option<PauseReason>) -> (Writer, bool) {
    let shared = Arc::clone(&writer.shared);
    let done = tokio::task::spawn_blocking(move || {
        let busy = writer.write(paused);
        (writer, busy)
    })
    .await;
    done.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "writing the gallery pages failed; starting over");
        (Writer::new(shared), false)
    })
}

/// The model and what was last written.
struct Writer {
    shared: Arc<Shared>,
    logs: Logs,
    model: Model,
    pause: Option<(PauseReason, SystemTime)>,
    css_written: bool,
    /// Subfolders when the first pages (which list them) were last written.
    subdirs_written: usize,
    quarantine_written: Option<(u64, usize)>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            logs: Logs::new(shared.logs.clone()),
            shared,
            model: Model::default(),
            pause: None,
            css_written: false,
            subdirs_written: usize::MAX,
            quarantine_written: None,
        }
    }

    /// Writes every page that changed; returns whether the "now" box has something to say.
    fn write(&mut self, paused: Option<PauseReason>) -> bool {
        self.pause = match (paused, self.pause) {
            (Some(reason), Some((was, since))) if reason == was => Some((reason, since)),
            (Some(reason), _) => Some((reason, SystemTime::now())),
            (None, _) => None,
        };
        let now = Now {
            in_flight: now::in_flight(&self.shared.work_dir),
            waiting: self.shared.waiting.load(Ordering::Relaxed),
            pause: self.pause,
        };
        let mut failed = None;
        for _ in 0..=CATCH_UP_ROUNDS {
            self.model.add(self.logs.read_new());
            if let Err(e) = self.write_pages(&now) {
                failed = Some(e);
            }
            if !self.logs.grew() {
                break;
            }
        }
        if let Some((path, e)) = failed {
            tracing::warn!(error = %e, path = %path.display(), "could not write a gallery page; it is tried again at the next change");
        }
        !now.is_quiet()
    }

    fn write_pages(&mut self, now: &Now) -> Result<(), (PathBuf, std::io::Error)> {
        let outbox = self.shared.outbox.clone();
        if !self.css_written {
            let assets = outbox.join(ASSETS_DIR);
            let css = assets.join("style.css");
            std::fs::create_dir_all(&assets).map_err(|e| (css.clone(), e))?;
            write_file(&assets, &css, render::CSS)?;
            sweep(&assets);
            sweep(&self.shared.quarantine);
            self.css_written = true;
        }
        let subdirs: Vec<String> = self
            .model
            .subdirs
            .keys()
            .filter(|d| page_dir_ok(d))
            .cloned()
            .collect();
        let filter_changed = subdirs.len() != self.subdirs_written;
        let at = SystemTime::now();
        let now_box = now::render(now, at);
        let mut result = self.write_listing(None, &subdirs, Some(&now_box), true);
        for dir in &subdirs {
            let r = self.write_listing(Some(dir), &subdirs, None, filter_changed);
            result = result.and(r);
        }
        self.subdirs_written = subdirs.len();
        result.and(self.write_quarantine())
    }

    /// Writes the dirty pages of the whole outbox's list (`subdir` None) or of one subfolder.
    fn write_listing(
        &mut self,
        subdir: Option<&str>,
        subdirs: &[String],
        now: Option<&str>,
        first_too: bool,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        let outbox = &self.shared.outbox;
        let listing = match subdir {
            None => &self.model.all,
            Some(d) => &self.model.subdirs[d],
        };
        let mut pages: BTreeSet<usize> = listing.dirty_pages().into_iter().collect();
        if first_too {
            pages.insert(1);
        }
        let (folder, up, title) = listing_place(outbox, subdir);
        if !pages.is_empty() {
            std::fs::create_dir_all(&folder).map_err(|e| (folder.clone(), e))?;
        }
        for page in pages {
            let rows: Vec<String> = listing
                .page(page)
                .filter_map(|k| self.model.row(k))
                .map(|row| render::outbox_row(row, &up, outbox.join(&row.dir).is_dir()))
                .collect();
            let first = page == 1;
            let html = render::page(
                &Page {
                    up: up.clone(),
                    title: title.clone(),
                    page,
                    pages: listing.pages(),
                    total: listing.len(),
                    now: now.filter(|_| first).map(str::to_owned),
                    filter: first.then_some((subdirs, subdir)),
                    inline_css: false,
                    intro: None,
                },
                &rows,
            );
            write_file(
                &outbox.join(ASSETS_DIR),
                &folder.join(page_name(page)),
                &html,
            )?;
        }
        let listing: &mut Listing = match subdir {
            None => &mut self.model.all,
            Some(d) => self.model.subdirs.get_mut(d).unwrap_or(&mut self.model.all),
        };
        listing.written();
        Ok(())
    }

    /// The quarantine's pages, whole each time: a requeued job's folder is gone, and its row
    /// with it.
    fn write_quarantine(&mut self) -> Result<(), (PathBuf, std::io::Error)> {
        let root = &self.shared.quarantine;
        let list = &self.model.quarantined;
        let present: Vec<_> = (1..=list.pages())
            .flat_map(|p| list.page(p))
            .filter_map(|k| self.model.row(k))
            .filter(|row| root.join(&row.dir).join(crate::job::ERROR_FILE).is_file())
            .collect();
        let shown = root.display().to_string();
        let rows: Vec<String> = present
            .iter()
            .map(|row| render::quarantine_row(row, &shown))
            .collect();
        let chunks: Vec<&[String]> = rows.chunks(super::store::PAGE_SIZE).collect();
        let pages = chunks.len().max(1);
        let signature = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            rows.hash(&mut h);
            h.finish()
        };
        if self
            .quarantine_written
            .as_ref()
            .is_some_and(|(s, _)| *s == signature)
        {
            return Ok(());
        }
        for page in 1..=pages {
            let html = render::page(
                &Page {
                    up: String::new(),
                    title: "remixd quarantine".to_owned(),
                    page,
                    pages,
                    total: rows.len(),
                    now: None,
                    filter: None,
                    inline_css: true,
                    intro: (page == 1).then(|| QUARANTINE_INTRO.to_owned()),
                },
                chunks.get(page - 1).copied().unwrap_or_default(),
            );
            write_file(root, &root.join(page_name(page)), &html)?;
        }
        let before = self.quarantine_written.as_ref().map_or(0, |(_, p)| *p);
        for stale in pages + 1..=before {
            let _ = std::fs::remove_file(root.join(page_name(stale)));
        }
        self.quarantine_written = Some((signature, pages));
        Ok(())
    }
}

const QUARANTINE_INTRO: &str = "<section class=\"intro\"><p>Jobs remixd could not process, \
newest first. Each says why and what to do. Once the cause is fixed (a new sidecar, another \
file), put a job back into the inbox by running <code>remixd requeue DIR</code> on the server \
(or <code>remixd requeue --all</code>): its original and sidecar go back where they came \
from.</p></section>";

const TEMP_PREFIX: &str = ".remixd-page-";

/// Removes page temporaries a crash left in `dir` (old enough that no live writer owns them).
fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(600)));
        if old && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A subfolder whose page can live at `outbox/SUBDIR/`: no empty, dot or `..` segment.
fn page_dir_ok(subdir: &str) -> bool {
    subdir
        .split('/')
        .all(|s| !s.is_empty() && !s.starts_with('.'))
}

/// Replaces `path` with `text` in one rename (mode 0666 less the umask), unless it already
/// holds exactly that. The temporary file is made in `scratch` (on `path`'s filesystem), so a
/// crash mid-write leaves no debris beside the job folders. Not synced: a page lost in a
/// crash is written again at the next change.
fn write_file(scratch: &Path, path: &Path, text: &str) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    let text = crate::secrets::scrub(text);
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let result = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(scratch)
        .and_then(|mut tmp| {
            tmp.write_all(text.as_bytes())?;
            tmp.persist(path).map(drop).map_err(|e| e.error)
        });
    result.map_err(|e| (path.to_path_buf(), e))
}
/// Where a listing's pages go, the way back up to the outbox from there, and their title.
fn listing_place(outbox: &Path, subdir: Option<&str>) -> (PathBuf, String, String) {
    match subdir {
        None => (
            outbox.to_path_buf(),
            String::new(),
            "remixd outbox".to_owned(),
        ),
        Some(d) => (
            outbox.join(d),
            "../".repeat(d.split('/').count()),
            format!("remixd outbox: {d}"),
        ),
    }
}
