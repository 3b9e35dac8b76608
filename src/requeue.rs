//! `remixd requeue`: put quarantined jobs back into the inbox. Each job's original and
//! sidecar go back to the inbox folder they came from; the rest of the job folder
//! (`error.json`, outputs already downloaded) moves to `quarantine/.requeued/`, so nothing is
//! deleted. Reading a running daemon's state is not needed: the inbox watcher picks the files
//! up like any new ones.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::events;
use crate::fsx::{self, Context, FsError};
use crate::pipeline::finish::free_destination;
use crate::pipeline::quarantine::ERROR_FILE;

/// The quarantine's folder for what requeued jobs left behind.
pub const REQUEUED_DIR: &str = ".requeued";

/// Why a folder named on the command line is not a quarantined job.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// Neither the path nor the path inside the quarantine exists.
    #[error("{}: not found, neither here nor in the quarantine", .given.display())]
    NotFound {
        /// The path as given.
        given: PathBuf,
    },
    /// The folder exists but is not inside the quarantine.
    #[error("{}: not inside the quarantine {}", .given.display(), .quarantine.display())]
    Outside {
        /// The path as given.
        given: PathBuf,
        /// The quarantine as configured.
        quarantine: PathBuf,
    },
    /// The quarantine itself, or a hidden folder in it.
    #[error("{}: not a quarantined job folder; name a folder holding {ERROR_FILE}", .given.display())]
    NotAJob {
        /// The path as given.
        given: PathBuf,
    },
    /// A folder without `error.json`.
    #[error("{}: no {ERROR_FILE} in it, so it is not a quarantined job folder", .given.display())]
    NoErrorFile {
        /// The path as given.
        given: PathBuf,
    },
    /// A job folder that could not be (fully) requeued.
    #[error("{}: {problem}", .job.display())]
    Job {
        /// The job folder under the quarantine as configured.
        job: PathBuf,
        /// What went wrong.
        problem: JobProblem,
    },
}

/// What kept one quarantined job from going back.
#[derive(Debug, thiserror::Error)]
pub enum JobProblem {
    /// Reading or moving failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `error.json` does not parse.
    #[error("{ERROR_FILE} is not usable: {0}")]
    Unusable(serde_json::Error),
    /// `error.json` names a file that could point outside its folder.
    #[error("{ERROR_FILE} names the file {0:?}, not a plain file name")]
    NotAPlainName(String),
    /// `error.json` names an inbox folder that could point outside the inbox.
    #[error("{ERROR_FILE} names the inbox folder {0:?}, not a relative path")]
    NotARelativeFolder(String),
    /// A file `error.json` names is not in the job folder.
    #[error("{0} is not in the job folder; nothing was moved")]
    Missing(String),
    /// The name is taken in the inbox.
    #[error("{} already exists; rename or move it, then requeue again (nothing was moved)", .0.display())]
    NameTaken(PathBuf),
    /// The files went back, but the rest of the job folder could not be filed away.
    #[error("the original is back in the inbox, but its leftovers could not move: {0}")]
    Leftovers(FsError),
}

/// Which quarantined jobs to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueTargets {
    /// Every job in the quarantine (`--all`).
    All,
    /// These job folders: absolute, relative to the current folder, or relative to the
    /// quarantine.
    Dirs(Vec<PathBuf>),
}

/// What a requeue did.
#[derive(Debug, Default)]
pub struct RequeueReport {
    /// The job folders (under the configured quarantine path) whose files went back.
    pub requeued: Vec<PathBuf>,
    /// One per job left alone or only partly handled, saying why and what to do.
    pub problems: Vec<RequeueError>,
}

/// Puts the `targets` back into the inbox. A job that cannot be requeued is skipped with a
/// line in [`RequeueReport::problems`]; the others go on.
///
/// # Errors
/// When the quarantine itself cannot be opened or listed.
pub fn requeue(config: &Config, targets: RequeueTargets) -> Result<RequeueReport, FsError> {
    let quarantine = Quarantine {
        root: fs::canonicalize(&config.quarantine)
            .context("opening the quarantine", &config.quarantine)?,
        shown: config.quarantine.clone(),
        inbox: config.inbox.clone(),
    };
    let mut report = RequeueReport::default();
    let jobs = match targets {
        RequeueTargets::All => find_jobs(&quarantine.root, Path::new(""))?,
        RequeueTargets::Dirs(dirs) => {
            let mut jobs = BTreeSet::new();
            for dir in &dirs {
                match quarantine.resolve(dir) {
                    Ok(rel) => _ = jobs.insert(rel),
                    Err(problem) => report.problems.push(problem),
                }
            }
            jobs.into_iter().collect()
        }
    };
    for rel in jobs {
        match quarantine.requeue_job(&rel) {
            Ok(warning) => {
                report.requeued.push(quarantine.shown.join(&rel));
                report.problems.extend(warning);
            }
            Err(problem) => report.problems.push(problem),
        }
    }
    Ok(report)
}

/// Job folders (holding `error.json`) under `root/rel`, relative to `root`, sorted. Links are
/// never followed, hidden folders (`.requeued` among them) never entered, and a job folder's
/// own subfolders are not searched.
fn find_jobs(root: &Path, rel: &Path) -> Result<Vec<PathBuf>, FsError> {
    let dir = root.join(rel);
    let mut entries = Vec::new();
    for entry in fs::read_dir(&dir).context("listing the quarantine", &dir)? {
        let entry = entry.context("listing the quarantine", &dir)?;
        let is_dir = entry
            .file_type()
            .context("listing the quarantine", &entry.path())?
            .is_dir();
        if is_dir && !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(rel.join(entry.file_name()));
        }
    }
    entries.sort();
    let mut jobs = Vec::new();
    for sub in entries {
        if is_job(&root.join(&sub)) {
            jobs.push(sub);
        } else {
            jobs.extend(find_jobs(root, &sub)?);
        }
    }
    Ok(jobs)
}

fn is_job(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(ERROR_FILE)).is_ok_and(|m| m.is_file())
}

/// The parts of `error.json` a requeue needs.
#[derive(Debug, Deserialize)]
struct ErrorRecord {
    #[serde(default)]
    job_id: Option<String>,
    source: FileRecord,
    #[serde(default)]
    sidecar: Option<FileRecord>,
}

#[derive(Debug, Deserialize)]
struct FileRecord {
    file: String,
    #[serde(default)]
    subdir: String,
}

struct Quarantine {
    /// The quarantine folder, links resolved.
    root: PathBuf,
    /// The quarantine folder as configured, for messages and the report.
    shown: PathBuf,
    inbox: PathBuf,
}

impl Quarantine {
    /// The job folder `given` names, relative to the quarantine root.
    fn resolve(&self, given: &Path) -> Result<PathBuf, RequeueError> {
        let mut candidates = vec![given.to_path_buf()];
        if given.is_relative() {
            candidates.push(self.root.join(given));
        }
        let found: Vec<PathBuf> = candidates
            .iter()
            .filter_map(|c| fs::canonicalize(c).ok())
            .collect();
        let given = given.to_path_buf();
        let Some(rel) = found.iter().find_map(|p| p.strip_prefix(&self.root).ok()) else {
            return Err(if found.is_empty() {
                RequeueError::NotFound { given }
            } else {
                RequeueError::Outside {
                    given,
                    quarantine: self.shown.clone(),
                }
            });
        };
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if rel.as_os_str().is_empty() || hidden {
            return Err(RequeueError::NotAJob { given });
        }
        if !is_job(&self.root.join(rel)) {
            return Err(RequeueError::NoErrorFile { given });
        }
        Ok(rel.to_path_buf())
    }

    /// Moves one job's files back. `Ok` may carry a warning when the files went back but the
    /// leftovers could not be filed away.
    fn requeue_job(&self, rel: &Path) -> Result<Option<RequeueError>, RequeueError> {
        let shown = self.shown.join(rel);
        let problem = |problem: JobProblem| RequeueError::Job {
            job: shown.clone(),
            problem,
        };
        let (record, subdir) = self.move_back(rel).map_err(problem)?;
        let file = subdir.join(&record.source.file);

        tracing::info!(
            event = events::JOB_REQUEUED,
            job_id = record.job_id.as_deref().unwrap_or(""),
            file = %file.display(),
            dir = %shown.display(),
            "put a quarantined job back into the inbox"
        );
        Ok(self.file_away(rel).err().map(problem))
    }

    /// Moves the original, its sidecar and its mask back to their inbox folder; returns what
    /// `error.json` said and that folder (relative to the inbox).
    fn move_back(&self, rel: &Path) -> Result<(ErrorRecord, PathBuf), JobProblem> {
        let dir = self.root.join(rel);
        let record = read_record(&dir)?;
        let subdir = relative_subdir(&record.source.subdir)?;
        let mut names = Vec::new();
        // The sidecar goes first: an image appearing without it would start its sidecar wait.
        if let Some(sidecar) = &record.sidecar {
            names.push(plain_name(&sidecar.file)?);
        }
        let image = plain_name(&record.source.file)?;
        // An inpaint mask goes back too, before its image, so the job finds it.
        let masks = crate::sidecar::mask_candidates(std::ffi::OsStr::new(&image));
        if let Some(mask) = masks
            .into_iter()
            .filter_map(|m| m.into_string().ok())
            .find(|m| fs::symlink_metadata(dir.join(m)).is_ok_and(|meta| meta.is_file()))
        {
            names.push(mask);
        }
        names.push(image);
        let target = self.inbox.join(&subdir);
        check_movable(&dir, &target, &names)?;
        fsx::create_dir_all_durable(&target).context("creating the inbox folder", &target)?;
        move_names(&dir, &target, &names)?;
        Ok((record, subdir))
    }

    /// Moves the rest of the job folder under `.requeued/` and removes emptied parents.
    fn file_away(&self, rel: &Path) -> Result<(), JobProblem> {
        let dir = self.root.join(rel);
        let dest = free_destination(&self.root.join(REQUEUED_DIR), rel);
        if let Some(parent) = dest.parent() {
            fsx::create_dir_all_durable(parent)
                .context("creating", parent)
                .map_err(JobProblem::Leftovers)?;
        }
        fsx::rename_durable(&dir, &dest)
            .context("moving the job folder to", &dest)
            .map_err(JobProblem::Leftovers)?;
        let mut parent = dir.parent();
        while let Some(p) = parent.filter(|p| p.starts_with(&self.root) && *p != self.root) {
            // Fails, as intended, when the folder still holds other jobs.
            if fs::remove_dir(p).is_err() {
                break;
            }
            parent = p.parent();
        }
        Ok(())
    }
}

fn read_record(dir: &Path) -> Result<ErrorRecord, JobProblem> {
    let path = dir.join(ERROR_FILE);
    let mut text = String::new();
    fsx::open_nofollow(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .context("reading", &path)?;
    serde_json::from_str(&text).map_err(JobProblem::Unusable)
}

/// A file name from `error.json`, refused if it could point outside its folder.
fn plain_name(name: &str) -> Result<String, JobProblem> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(name.to_owned()),
        _ => Err(JobProblem::NotAPlainName(name.to_owned())),
    }
}

/// `source.subdir` from `error.json`, refused if it could point outside the inbox.
fn relative_subdir(subdir: &str) -> Result<PathBuf, JobProblem> {
    let path = Path::new(subdir);
    if path.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(path.to_path_buf())
    } else {
        Err(JobProblem::NotARelativeFolder(subdir.to_owned()))
    }
}

/// Every file must be in the job folder and its name free in the inbox folder.
fn check_movable(dir: &Path, target: &Path, names: &[String]) -> Result<(), JobProblem> {
    for name in names {
        if fs::symlink_metadata(dir.join(name)).is_err() {
            return Err(JobProblem::Missing(name.clone()));
        }
        let clash = target.join(name);
        if fs::symlink_metadata(&clash).is_ok() {
            return Err(JobProblem::NameTaken(clash));
        }
    }
    Ok(())
}

/// Moves `names` from `dir` to `target`; if one fails, moves back those already moved.
fn move_names(dir: &Path, target: &Path, names: &[String]) -> Result<(), JobProblem> {
    for (i, name) in names.iter().enumerate() {
        let (from, to) = (dir.join(name), target.join(name));
        if let Err(e) = fsx::rename_durable(&from, &to).context("moving back to the inbox", &from) {
            for done in &names[..i] {
                let _ = fsx::rename_durable(&target.join(done), &dir.join(done));
            }
            return Err(e.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        ApiConfig, Limits, LogFormat, LoggingConfig, Provider, RetryConfig, WatchConfig, WatchMode,
    };
    use std::time::Duration;

    struct Env {
        _tmp: tempfile::TempDir,
        config: Config,
    }

    fn env() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for dir in ["inbox", "outbox", "quarantine"] {
            fs::create_dir(root.join(dir)).expect("mkdir");
        }
        let secs = Duration::from_secs;
        let config = Config {
            path: root.join("config.yaml"),
            inbox: root.join("inbox"),
            outbox: root.join("outbox"),
            quarantine: root.join("quarantine"),
            work_dir: root.join("inbox/.remixd"),
            api: ApiConfig {
                provider: Provider::DryRun,
                base_url: None,
                api_key: None,
                api_key_source: String::new(),
                request_timeout: secs(180),
                connect_timeout: secs(10),
            },
            defaults: crate::sidecar::Fields::default(),
            watch: WatchConfig {
                mode: WatchMode::Poll,
                poll_interval: secs(2),
                rescan_interval: secs(300),
                settle: secs(1),
                sidecar_wait: secs(5),
                orphan_after: secs(3600),
            },
            limits: Limits {
                max_image_bytes: 10 << 20,
                concurrency: 4,
                inflight_images: 10,
                requests_per_minute: 60,
                daily_image_budget: None,
                daily_spend_budget_usd: None,
                scope: crate::config::LimitScope::Account,
            },
            retry: RetryConfig {
                max_attempts: 5,
                initial_backoff: secs(2),
                max_backoff: secs(300),
                resend_after_timeout: true,
            },
            pricing: crate::config::PUBLISHED_PRICES,
            layout: "{subdir}/{stem}-{job_id}".to_owned(),
            gallery: false,
            gallery_delay: secs(5),
            logging: LoggingConfig {
                format: LogFormat::Json,
                level: "info".to_owned(),
                stats_interval: secs(60),
            },
            metrics_textfile: None,
            shutdown_grace: secs(30),
            umask: 0o007,
            lease: secs(60),
        };
        Env { _tmp: tmp, config }
    }

    impl Env {
        /// A job folder at `quarantine/rel` for `inbox/subdir/file` (+ `sidecar`).
        fn job(&self, rel: &str, subdir: &str, file: &str, sidecar: Option<&str>) -> PathBuf {
            let dir = self.config.quarantine.join(rel);
            fs::create_dir_all(&dir).expect("mkdir job");
            fs::write(dir.join(file), format!("image {rel}")).expect("write original");
            if let Some(name) = sidecar {
                fs::write(dir.join(name), "prompt: a cat").expect("write sidecar");
            }
            let record = serde_json::json!({
                "job_id": "01JTEST", "reason": "rejected_by_api", "message": "no",
                "source": {"file": file, "subdir": subdir, "bytes": 9},
                "sidecar": sidecar.map(|s| serde_json::json!({"file": s, "sha256": "00"})),
            });
            fs::write(dir.join(ERROR_FILE), record.to_string()).expect("write error.json");
            dir
        }

        fn inbox(&self, rel: &str) -> PathBuf {
            self.config.inbox.join(rel)
        }

        fn requeued(&self, rel: &str) -> PathBuf {
            self.config.quarantine.join(REQUEUED_DIR).join(rel)
        }

        fn run(&self, targets: RequeueTargets) -> RequeueReport {
            requeue(&self.config, targets).expect("requeue")
        }
    }

    fn dirs(paths: &[&Path]) -> RequeueTargets {
        RequeueTargets::Dirs(paths.iter().map(|p| p.to_path_buf()).collect())
    }

    #[test]
    fn a_job_at_the_root_goes_back_with_its_sidecar() {
        let env = env();
        let dir = env.job("cat-01J", "", "cat.png", Some("cat.yaml"));
        let report = env.run(dirs(&[&dir]));
        assert_eq!(report.requeued, std::slice::from_ref(&dir));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(
            fs::read(env.inbox("cat.png")).expect("original"),
            b"image cat-01J"
        );
        assert!(env.inbox("cat.yaml").is_file());
        assert!(!dir.exists());
        assert!(env.requeued("cat-01J").join(ERROR_FILE).is_file());
        assert!(!env.requeued("cat-01J").join("cat.png").exists());
    }

    #[test]
    fn a_nested_job_named_relative_to_the_quarantine_returns_to_its_subfolder() {
        let env = env();
        let dir = env.job("a/b/cat-01J", "a/b", "cat.png", None);
        let report = env.run(dirs(&[Path::new("a/b/cat-01J")]));
        assert_eq!(
            report.requeued,
            std::slice::from_ref(&dir),
            "{:?}",
            report.problems
        );
        assert!(env.inbox("a/b/cat.png").is_file());
        assert!(env.requeued("a/b/cat-01J").join(ERROR_FILE).is_file());
        assert!(
            !env.config.quarantine.join("a").exists(),
            "emptied parents go"
        );
        assert!(env.config.quarantine.is_dir(), "the root stays");
    }

    #[test]
    fn all_finds_every_job_but_skips_requeued_and_hidden_folders() {
        let env = env();
        env.job("dog-01A", "", "dog.jpg", Some("dog.txt"));
        env.job("x/cat-01B", "x", "cat.png", None);
        env.job("x/y/owl-01C", "x/y", "owl.webp", None);
        env.job(".requeued/old-01D", "", "old.png", None);
        env.job(".hidden/h-01E", "", "h.png", None);
        let report = env.run(RequeueTargets::All);
        assert_eq!(report.requeued.len(), 3, "{report:?}");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        for file in ["dog.jpg", "dog.txt", "x/cat.png", "x/y/owl.webp"] {
            assert!(env.inbox(file).is_file(), "{file}");
        }
        assert!(!env.inbox("old.png").exists());
        assert!(!env.inbox("h.png").exists());
    }

    #[test]
    fn a_name_taken_in_the_inbox_leaves_the_job_untouched() {
        let env = env();
        let dir = env.job("cat-01J", "", "cat.png", Some("cat.yaml"));
        fs::write(env.inbox("cat.png"), b"someone else's").expect("write");
        let report = env.run(RequeueTargets::All);
        assert!(report.requeued.is_empty());
        assert_eq!(report.problems.len(), 1);
        assert!(
            matches!(
                &report.problems[0],
                RequeueError::Job { problem: JobProblem::NameTaken(path), .. }
                    if *path == env.inbox("cat.png")
            ),
            "{:?}",
            report.problems
        );
        assert!(report.problems[0].to_string().contains("already exists"));
        assert_eq!(
            fs::read(env.inbox("cat.png")).expect("read"),
            b"someone else's"
        );
        assert!(
            !env.inbox("cat.yaml").exists(),
            "the sidecar did not move either"
        );
        assert!(dir.join("cat.png").is_file() && dir.join("cat.yaml").is_file());
    }

    #[test]
    fn a_folder_outside_the_quarantine_is_refused() {
        let env = env();
        let outside = env.config.outbox.join("cat-01J");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join(ERROR_FILE), "{}").expect("write");
        let escape = env.config.quarantine.join("../outbox/cat-01J");
        let report = env.run(dirs(&[&outside, &escape, Path::new("/nonexistent/x")]));
        assert!(report.requeued.is_empty());
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert!(matches!(
            report.problems.as_slice(),
            [
                RequeueError::Outside { .. },
                RequeueError::Outside { .. },
                RequeueError::NotFound { .. }
            ]
        ));
        let message = report.problems[0].to_string();
        assert!(message.contains("not inside the quarantine"), "{message}");
        assert!(outside.join(ERROR_FILE).is_file());
    }

    #[test]
    fn outputs_move_to_requeued_and_a_second_requeue_gets_a_suffix() {
        let env = env();
        env.job("cat-01J", "", "cat.png", None);
        fs::write(
            env.config.quarantine.join("cat-01J/cat-remix-1.png"),
            b"out",
        )
        .expect("w");
        fs::create_dir_all(env.requeued("cat-01J")).expect("earlier requeue");
        let report = env.run(RequeueTargets::All);
        assert_eq!(report.requeued.len(), 1, "{report:?}");
        let kept = env.requeued("cat-01J-2");
        assert_eq!(
            fs::read(kept.join("cat-remix-1.png")).expect("output"),
            b"out"
        );
        assert!(kept.join(ERROR_FILE).is_file());
        assert!(!kept.join("cat.png").exists());
    }

    #[test]
    fn error_json_cannot_send_files_outside_the_inbox() {
        let env = env();
        let dir = env.job("cat-01J", "../outbox", "cat.png", None);
        let report = env.run(RequeueTargets::All);
        assert!(report.requeued.is_empty());
        assert!(
            matches!(
                &report.problems[0],
                RequeueError::Job { problem: JobProblem::NotARelativeFolder(subdir), .. }
                    if subdir == "../outbox"
            ),
            "{report:?}"
        );
        assert!(
            report.problems[0]
                .to_string()
                .contains("not a relative path")
        );
        assert!(dir.join("cat.png").is_file());
    }

    #[test]
    fn all_does_not_follow_symlinks() {
        let env = env();
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let foreign = elsewhere.path().join("job");
        fs::create_dir(&foreign).expect("mkdir");
        fs::write(foreign.join("cat.png"), b"x").expect("write");
        let record = r#"{"source": {"file": "cat.png", "subdir": ""}, "sidecar": null}"#;
        fs::write(foreign.join(ERROR_FILE), record).expect("write");
        std::os::unix::fs::symlink(&foreign, env.config.quarantine.join("link")).expect("ln");
        let report = env.run(RequeueTargets::All);
        assert!(
            report.requeued.is_empty() && report.problems.is_empty(),
            "{report:?}"
        );
        assert!(foreign.join("cat.png").is_file());
    }
}
