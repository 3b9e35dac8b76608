//! The test environment: a temporary folder with `inbox/`, `outbox/`, `quarantine/` and a
//! `config.yaml` written from fast test timings plus per-test overrides; helpers that drop
//! files into the inbox the way users do and remember what was dropped, so the asserts can
//! check byte-identity and that nothing was lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::fake_api::{FakeApi, Mode};

/// The API key handed to the daemon (through `REMIXD_API_KEY`). Distinctive, so a leak into
/// a log line or file is easy to find.
pub const API_KEY: &str = "sk-test-Qz7wX2vLk9";

/// Hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What was put into the inbox.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A symlink pointing here.
    Symlink(PathBuf),
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A `_defaults.yaml`: must stay in the inbox.
    Defaults(Vec<u8>),
}

/// One entry dropped into the inbox.
#[derive(Debug, Clone)]
pub struct Dropped {
    /// Path relative to the inbox, `/`-separated.
    pub rel: String,
    /// What it is.
    pub kind: Kind,
    /// When it was complete in the inbox.
    pub at: Instant,
}

impl Dropped {
    /// The file name.
    pub fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap()
    }

    /// The folder relative to the inbox (`""` at the root).
    pub fn subdir(&self) -> &str {
        self.rel.rsplit_once('/').map_or("", |(dir, _)| dir)
    }

    /// The bytes of a regular file.
    pub fn bytes(&self) -> &[u8] {
        match &self.kind {
            Kind::File(b) | Kind::Defaults(b) => b,
            other => panic!("{} is not a regular file: {other:?}", self.rel),
        }
    }
}

/// A temporary remixd installation.
pub struct TestEnv {
    dir: tempfile::TempDir,
    /// The inbox.
    pub inbox: PathBuf,
    /// The outbox.
    pub outbox: PathBuf,
    /// The quarantine.
    pub quarantine: PathBuf,
    /// The config file the daemon is started with.
    pub config_path: PathBuf,
    dropped: Mutex<Vec<Dropped>>,
}

impl TestEnv {
    /// Fresh folders (all three created) and no config yet.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("remixd-it-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let env = Self {
            inbox: root.join("inbox"),
            outbox: root.join("outbox"),
            quarantine: root.join("quarantine"),
            config_path: root.join("config.yaml"),
            dir,
            dropped: Mutex::new(Vec::new()),
        };
        for d in [&env.inbox, &env.outbox, &env.quarantine] {
            std::fs::create_dir_all(d).unwrap();
        }
        env
    }

    /// The temporary folder holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The default work area, `<inbox>/.remixd`.
    pub fn work_dir(&self) -> PathBuf {
        self.inbox.join(".remixd")
    }

    /// A config with the test timings, pointing at nothing yet (provider `dry-run`).
    pub fn config(&self) -> ConfigBuilder {
        ConfigBuilder::new(self)
    }

    /// Everything dropped so far.
    pub fn dropped(&self) -> Vec<Dropped> {
        self.dropped.lock().unwrap().clone()
    }

    /// The entry dropped at `rel`.
    pub fn dropped_at(&self, rel: &str) -> Dropped {
        self.dropped()
            .into_iter()
            .rev()
            .find(|d| d.rel == rel)
            .unwrap_or_else(|| panic!("nothing was dropped at {rel}"))
    }

    fn record(&self, rel: &str, kind: Kind) {
        self.dropped.lock().unwrap().push(Dropped {
            rel: rel.to_string(),
            kind,
            at: Instant::now(),
        });
    }

    fn target(&self, rel: &str) -> PathBuf {
        let path = self.inbox.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    }

    /// Writes `bytes` under a hidden temporary name in the same folder, then renames it to
    /// `rel`: the file appears complete at once, as a careful uploader does it.
    pub fn drop_file(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        let path = self.target(rel);
        let tmp = path.with_file_name(format!(
            ".{}.uploading",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        self.record(rel, Kind::File(bytes.to_vec()));
    }

    /// Rewrites the file at `rel` in place, slowly, as [`TestEnv::drop_slowly`] writes one:
    /// the old bytes are gone by the dropper's own hand, so only the new ones must end
    /// somewhere.
    pub fn rewrite_slowly(&self, rel: &str, bytes: &[u8], chunks: usize, interval: Duration) {
        self.dropped.lock().unwrap().retain(|d| d.rel != rel);
        self.drop_slowly(rel, bytes, chunks, interval);
    }

    /// Writes `bytes` in place in `chunks` pieces, `interval` apart (a slow copy over the
    /// network): the file exists, incomplete, for the whole time.
    pub fn drop_slowly(&self, rel: &str, bytes: &[u8], chunks: usize, interval: Duration) {
        let path = self.target(rel);
        let mut file = std::fs::File::create(&path).unwrap();
        let size = bytes.len().div_ceil(chunks);
        for (i, chunk) in bytes.chunks(size).enumerate() {
            if i > 0 {
                std::thread::sleep(interval);
            }
            file.write_all(chunk).unwrap();
            file.flush().unwrap();
        }
        drop(file);
        self.record(rel, Kind::File(bytes.to_vec()));
    }

    /// A `_defaults.yaml` (or any file that must stay in the inbox) at `rel`.
    pub fn place_defaults(&self, rel: &str, yaml: &str) {
        let path = self.target(rel);
        let tmp = path.with_file_name(".defaults.uploading");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        self.record(rel, Kind::Defaults(yaml.as_bytes().to_vec()));
    }

    /// A symlink at `rel` pointing at `target`.
    pub fn drop_symlink(&self, rel: &str, target: &Path) {
        let path = self.target(rel);
        std::os::unix::fs::symlink(target, &path).unwrap();
        self.record(rel, Kind::Symlink(target.to_path_buf()));
    }

    /// A second hard link at `rel` to the regular file `existing`.
    pub fn drop_hard_link(&self, rel: &str, existing: &Path) {
        let path = self.target(rel);
        std::fs::hard_link(existing, &path).unwrap();
        self.record(rel, Kind::File(std::fs::read(existing).unwrap()));
    }

    /// A named pipe at `rel`.
    pub fn drop_fifo(&self, rel: &str) {
        let path = self.target(rel);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
        self.record(rel, Kind::Fifo);
    }

    /// A unix socket at `rel` (bound, then the listener dropped: the entry stays).
    pub fn drop_socket(&self, rel: &str) {
        let path = self.target(rel);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        self.record(rel, Kind::Socket);
    }

    /// A regular file named `name` (any bytes, e.g. not UTF-8) in the inbox folder `dir`,
    /// written under a hidden name and renamed. Not recorded: `Dropped` names are text.
    pub fn drop_file_named(&self, dir: &str, name: &std::ffi::OsStr, bytes: &[u8]) -> PathBuf {
        let folder = self.inbox.join(dir);
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(name);
        let tmp = folder.join(".named.uploading");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Every entry under `dir` (files, links, pipes; not folders), relative and sorted.
    pub fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// The three folders' contents, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "inbox: {:#?}\noutbox: {:#?}\nquarantine: {:#?}",
            Self::tree(&self.inbox),
            Self::tree(&self.outbox),
            Self::tree(&self.quarantine)
        )
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for path in walk_paths(dir) {
        out.push(
            path.strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
}

/// Every non-folder entry under `dir`, recursively, never following symlinks.
pub fn walk_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_paths(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Builds `config.yaml`: test timings, then overrides by dotted key.
pub struct ConfigBuilder {
    path: PathBuf,
    root: serde_yaml::Value,
}

impl ConfigBuilder {
    fn new(env: &TestEnv) -> Self {
        let text = format!(
            r"
inbox: {inbox}
outbox: {outbox}
quarantine: {quarantine}
api:
  provider: dry-run
watch:
  settle: 200ms
  poll_interval: 100ms
  sidecar_wait: 400ms
  orphan_after: 3s
limits:
  requests_per_minute: 600
retry:
  initial_backoff: 50ms
  max_backoff: 1s
logging:
  format: json
  level: info
shutdown_grace: 5s
",
            inbox = env.inbox.display(),
            outbox = env.outbox.display(),
            quarantine = env.quarantine.display(),
        );
        Self {
            path: env.config_path.clone(),
            root: serde_yaml::from_str(&text).unwrap(),
        }
    }

    /// Points the API at `fake`, with its provider.
    pub fn fake(self, fake: &FakeApi) -> Self {
        let provider = match fake.mode() {
            Mode::Kkiai => "kkiai",
            Mode::Ideogram => "ideogram",
        };
        self.set("api.provider", provider)
            .set("api.base_url", &fake.url())
    }

    /// Sets `key` (dotted, e.g. `watch.settle`) to `yaml` (parsed as YAML: `3`, `1s`,
    /// `{a: b}`, `null`).
    pub fn set(mut self, key: &str, yaml: &str) -> Self {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut node = &mut self.root;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            let map = node.as_mapping_mut().unwrap();
            node = map
                .entry(serde_yaml::Value::from(*part))
                .or_insert_with(|| serde_yaml::Value::Mapping(serde_yaml::Mapping::new()));
        }
        node.as_mapping_mut()
            .unwrap()
            .insert(serde_yaml::Value::from(parts[parts.len() - 1]), value);
        self
    }

    /// Sets several keys.
    pub fn set_all(self, pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(self, |b, (k, v)| b.set(k, v))
    }

    /// The YAML text.
    pub fn text(&self) -> String {
        serde_yaml::to_string(&self.root).unwrap()
    }

    /// Writes the config file; returns its path.
    pub fn write(self) -> PathBuf {
        std::fs::write(&self.path, self.text()).unwrap();
        self.path
    }

    /// Writes the config to another path (for tests that need two configs).
    pub fn write_to(self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).unwrap();
        path.to_path_buf()
    }
}

/// A small seeded random generator (splitmix64) for tests that kill or delay at random
/// moments: the seed is printed, so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    /// From `$name` when set (to replay a run), else from the clock; prints the seed.
    pub fn from_env_or_time(name: &str) -> Self {
        let seed = std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed: {seed} (replay with {name}={seed})");
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}
