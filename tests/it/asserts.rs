//! Checks of what remixd left on disk, as SPEC.md describes it: a published job folder
//! (original and sidecar byte-identical, outputs `STEM-remix-N.EXT`, a complete
//! `metadata.json`), a quarantined one (`error.json` and its fields), and that every dropped
//! file is in exactly one place.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::env::{Dropped, Kind, TestEnv, sha256, walk_paths};
use crate::fake_api::Upload;
use crate::images;

/// The version every metadata and error file must name.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const SIDECAR_EXTS: [&str; 4] = ["yaml", "yml", "json", "txt"];

/// A published job folder.
#[derive(Debug)]
pub struct Published {
    /// The folder.
    pub dir: PathBuf,
    /// `metadata.json`.
    pub meta: Value,
}

impl Published {
    /// The output entries of `metadata.json`.
    pub fn outputs(&self) -> &Vec<Value> {
        self.meta["outputs"].as_array().unwrap()
    }

    /// The file names of the outputs that were kept, in order.
    pub fn output_files(&self) -> Vec<String> {
        self.outputs()
            .iter()
            .filter_map(|o| o["file"].as_str().map(str::to_string))
            .collect()
    }

    /// The bytes of a file in the folder.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

/// A quarantined job folder.
#[derive(Debug)]
pub struct Quarantined {
    /// The folder.
    pub dir: PathBuf,
    /// `error.json`.
    pub error: Value,
}

fn stem_of(name: &str) -> &str {
    Path::new(name).file_stem().unwrap().to_str().unwrap()
}

fn is_sidecar_name(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| SIDECAR_EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The sidecar the image at `image` should have taken along: `NAME.EXT.*` before `STEM.*`,
/// among the files dropped in its folder. Returns it and the other (losing) candidates.
pub fn expected_sidecar(env: &TestEnv, image: &Dropped) -> (Option<Dropped>, Vec<String>) {
    let name = image.name();
    let prefix = if image.subdir().is_empty() {
        String::new()
    } else {
        format!("{}/", image.subdir())
    };
    let mut candidates = Vec::new();
    for base in [name, stem_of(name)] {
        for ext in SIDECAR_EXTS {
            candidates.push(format!("{prefix}{base}.{ext}"));
        }
    }
    let dropped = env.dropped();
    let mut found = candidates.iter().filter_map(|c| {
        dropped
            .iter()
            .find(|d| &d.rel == c && matches!(d.kind, Kind::File(_)))
    });
    let winner = found.next().cloned();
    let losers = found.map(|d| d.name().to_string()).collect();
    (winner, losers)
}

/// The one folder directly under `parent` that holds an entry named `name` (panics, with the
/// tree, unless there is exactly one).
pub fn single_job_dir(env: &TestEnv, parent: &Path, name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", parent.display(), env.describe()))
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .filter(|d| d.join(name).symlink_metadata().is_ok())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected exactly one job folder holding {name} under {}, found {dirs:?}\n{}",
        parent.display(),
        env.describe()
    );
    dirs.into_iter().next().unwrap()
}

/// The JSON file at `path` (panics, naming it, when it cannot be read or parsed).
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn check_job_id(job_id: &Value, dir: &Path, name: &str) -> String {
    let id = job_id
        .as_str()
        .unwrap_or_else(|| panic!("job_id {job_id} is not a string"));
    assert!(
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "job_id {id:?} is not safe in a file name"
    );
    // SPEC.md, Configuration: output.layout "{subdir}/{stem}-{job_id}".
    let folder = dir.file_name().unwrap().to_str().unwrap();
    assert_eq!(folder, format!("{}-{id}", stem_of(name)), "job folder name");
    id.to_string()
}

fn check_original(dir: &Path, dropped: &Dropped) {
    let path = dir.join(dropped.name());
    let meta = path.symlink_metadata().unwrap();
    match &dropped.kind {
        Kind::File(bytes) | Kind::Defaults(bytes) => {
            assert!(
                meta.file_type().is_file(),
                "{} is not a regular file",
                path.display()
            );
            assert!(
                std::fs::read(&path).unwrap() == *bytes,
                "{} is not byte-identical to what was dropped",
                path.display()
            );
        }
        Kind::Symlink(target) => {
            assert!(
                meta.file_type().is_symlink(),
                "{} is no longer a symlink",
                path.display()
            );
            assert_eq!(
                &std::fs::read_link(&path).unwrap(),
                target,
                "symlink target changed"
            );
        }
        Kind::Fifo => assert!(
            meta.file_type().is_fifo(),
            "{} is not a FIFO",
            path.display()
        ),
        Kind::Socket => assert!(
            meta.file_type().is_socket(),
            "{} is not a socket",
            path.display()
        ),
    }
}

fn check_sidecar_files(dir: &Path, sidecar: Option<&Dropped>, losers: &[String]) {
    if let Some(sidecar) = sidecar {
        let path = dir.join(sidecar.name());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "sidecar {} missing from {}: {e}",
                sidecar.name(),
                dir.display()
            )
        });
        assert!(
            bytes == sidecar.bytes(),
            "sidecar {} is not byte-identical",
            path.display()
        );
    }
    for loser in losers {
        assert!(
            !dir.join(loser).exists(),
            "{loser} is not the image's sidecar (a NAME.EXT.* sidecar wins) but was taken along"
        );
    }
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() >= 20
            && s.as_bytes()[4] == b'-'
            && s.as_bytes()[10] == b'T'
            && (s.ends_with('Z') || s[19..].contains(['+', '-']))
    })
}

fn check_source(source: &Value, dropped: &Dropped) {
    assert_eq!(source["file"], dropped.name(), "source.file");
    assert_eq!(source["subdir"], dropped.subdir(), "source.subdir");
}

fn check_image_source(source: &Value, dropped: &Dropped) {
    check_source(source, dropped);
    let bytes = dropped.bytes();
    assert_eq!(source["bytes"], bytes.len(), "source.bytes");
    assert_eq!(source["sha256"], sha256(bytes), "source.sha256");
    assert_eq!(
        source["format"],
        images::format_of(bytes).unwrap(),
        "source.format"
    );
    let (w, h) = images::dimensions(bytes).unwrap();
    assert_eq!(
        (source["width"].as_u64(), source["height"].as_u64()),
        (Some(w.into()), Some(h.into()))
    );
}

fn check_outputs(dir: &Path, stem: &str, meta: &Value) -> Vec<String> {
    let outputs = meta["outputs"].as_array().expect("outputs is an array");
    let answered = meta["response"]["data"]
        .as_array()
        .expect("response.data is an array");
    assert_eq!(
        outputs.len(),
        answered.len(),
        "one output entry per item of the answer"
    );
    let mut files = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        for key in [
            "file",
            "url",
            "seed",
            "resolution",
            "is_image_safe",
            "style_type",
            "prompt",
            "bytes",
            "sha256",
        ] {
            assert!(out.get(key).is_some(), "outputs[{i}] has no {key}: {out}");
        }
        let safe = out["is_image_safe"]
            .as_bool()
            .expect("is_image_safe is a bool");
        let Some(file) = out["file"].as_str() else {
            // SPEC.md, The outbox: "An output withheld for safety keeps its entry with file: null".
            assert!(
                !safe,
                "outputs[{i}] has no file but is_image_safe is true: {out}"
            );
            continue;
        };
        assert!(
            safe,
            "outputs[{i}] kept although withheld for safety: {out}"
        );
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("output {file}: {e}"));
        let format =
            images::format_of(&bytes).unwrap_or_else(|| panic!("output {file} is not an image"));
        // SPEC.md: outputs `STEM-remix-N.EXT`, N the 1-based position, EXT from the bytes.
        assert_eq!(
            file,
            format!("{stem}-remix-{}.{}", i + 1, images::ext_for(format))
        );
        assert_eq!(out["bytes"], bytes.len(), "outputs[{i}].bytes");
        assert_eq!(out["sha256"], sha256(&bytes), "outputs[{i}].sha256");
        assert!(
            out["url"].is_string() || meta["provider"] == "dry-run",
            "outputs[{i}].url"
        );
        files.push(file.to_string());
    }
    assert!(!files.is_empty(), "a published job has at least one output");
    files
}

fn check_timings(timings: &Value, dry_run: bool) {
    for key in [
        "detected_at",
        "claimed_at",
        "submitted_at",
        "responded_at",
        "completed_at",
    ] {
        // The dry-run test checks its own submission time, after everything else.
        if dry_run && key == "submitted_at" && timings[key].is_null() {
            continue;
        }
        assert!(
            is_rfc3339(&timings[key]),
            "timings.{key} is not an RFC 3339 time: {timings}"
        );
    }
    for key in ["api_ms", "download_ms", "total_ms"] {
        assert!(
            timings[key].is_u64(),
            "timings.{key} is not a non-negative integer: {timings}"
        );
    }
}

fn check_metadata(meta: &Value, dropped: &Dropped, sidecar: Option<&Dropped>) {
    assert_eq!(meta["remixd_version"], VERSION, "remixd_version");
    let provider = meta["provider"].as_str().expect("provider is a string");
    if provider == "dry-run" {
        assert!(
            meta["endpoint"].is_null(),
            "dry-run endpoint must be null: {}",
            meta["endpoint"]
        );
    } else {
        let endpoint = meta["endpoint"].as_str().expect("endpoint is a string");
        assert!(
            endpoint.ends_with("/v1/ideogram-v3/remix"),
            "endpoint {endpoint}"
        );
    }
    check_image_source(&meta["source"], dropped);
    match sidecar {
        None => assert!(
            meta["sidecar"].is_null(),
            "sidecar should be null: {}",
            meta["sidecar"]
        ),
        Some(s) => {
            assert_eq!(meta["sidecar"]["file"], s.name(), "sidecar.file");
            assert_eq!(
                meta["sidecar"]["sha256"],
                sha256(s.bytes()),
                "sidecar.sha256"
            );
        }
    }
    let request = meta["request"].as_object().expect("request is an object");
    assert!(!request.contains_key("image"), "request lists the image");
    assert!(request["prompt"].is_string(), "request.prompt");
    assert!(
        meta["response"].is_object(),
        "response is the API's JSON object"
    );
    // "attempts counts the requests sent for the job": dry-run sends none.
    let least = u64::from(provider != "dry-run");
    assert!(
        meta["attempts"].as_u64().is_some_and(|a| a >= least),
        "attempts: {}",
        meta["attempts"]
    );
    check_timings(&meta["timings"], provider == "dry-run");
}

/// The image dropped at `rel` was published: exactly one folder `outbox/SUBDIR/STEM-JOBID/`
/// holding the original and its sidecar byte-identical, the outputs, and a complete
/// `metadata.json`, and nothing else.
pub fn assert_published(env: &TestEnv, rel: &str) -> Published {
    let dropped = env.dropped_at(rel);
    let name = dropped.name();
    let dir = single_job_dir(env, &env.outbox.join(dropped.subdir()), name);
    let meta = read_json(&dir.join("metadata.json"));
    check_job_id(&meta["job_id"], &dir, name);
    check_original(&dir, &dropped);
    let (sidecar, losers) = expected_sidecar(env, &dropped);
    check_sidecar_files(&dir, sidecar.as_ref(), &losers);
    check_metadata(&meta, &dropped, sidecar.as_ref());
    let mut expected = check_outputs(&dir, stem_of(name), &meta);
    expected.push(name.to_string());
    expected.push("metadata.json".into());
    if let Some(s) = &sidecar {
        expected.push(s.name().to_string());
    }
    expected.sort();
    // SPEC.md, A job: nothing is left half-written in the outbox.
    assert_eq!(entries(&dir), expected, "files in {}", dir.display());
    Published { dir, meta }
}

fn check_error_json(error: &Value, dropped: &Dropped, reason: &str) {
    for key in [
        "job_id",
        "reason",
        "message",
        "stage",
        "attempts",
        "http_status",
        "api_error",
        "source",
        "at",
        "remixd_version",
    ] {
        assert!(error.get(key).is_some(), "error.json has no {key}: {error}");
    }
    assert_eq!(error["reason"], reason, "reason in {error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.trim().len() > 10),
        "message: {error}"
    );
    assert!(error["stage"].is_string(), "stage: {error}");
    assert!(error["attempts"].is_u64(), "attempts: {error}");
    assert!(
        error["http_status"].is_null() || error["http_status"].is_u64(),
        "http_status: {error}"
    );
    match &error["api_error"] {
        Value::Null => {}
        Value::String(s) => assert!(s.len() <= 4096, "api_error over 4 KiB"),
        other => panic!("api_error is neither a string nor null: {other}"),
    }
    assert!(is_rfc3339(&error["at"]), "at: {error}");
    assert_eq!(error["remixd_version"], VERSION);
    check_source(&error["source"], dropped);
}

/// The entry dropped at `rel` was quarantined for `reason`: exactly one folder
/// `quarantine/SUBDIR/STEM-JOBID/` holding it (byte-identical; a symlink or FIFO as itself),
/// its sidecar, any outputs already fetched, and a complete `error.json`.
pub fn assert_quarantined(env: &TestEnv, rel: &str, reason: &str) -> Quarantined {
    let dropped = env.dropped_at(rel);
    let name = dropped.name();
    let dir = single_job_dir(env, &env.quarantine.join(dropped.subdir()), name);
    let error = read_json(&dir.join("error.json"));
    check_error_json(&error, &dropped, reason);
    check_job_id(&error["job_id"], &dir, name);
    check_original(&dir, &dropped);
    let mut allowed = vec![name.to_string(), "error.json".to_string()];
    if !is_sidecar_name(name) {
        let (sidecar, losers) = expected_sidecar(env, &dropped);
        check_sidecar_files(&dir, sidecar.as_ref(), &losers);
        assert!(
            error.get("sidecar").is_some(),
            "error.json has no sidecar key: {error}"
        );
        match &sidecar {
            None => assert!(
                error["sidecar"].is_null(),
                "error.json sidecar should be null: {error}"
            ),
            Some(s) => {
                assert_eq!(
                    error["sidecar"]["file"],
                    s.name(),
                    "error.json sidecar.file"
                );
                allowed.push(s.name().to_string());
            }
        }
    }
    let stem = stem_of(name);
    for entry in entries(&dir) {
        let output = entry
            .strip_prefix(&format!("{stem}-remix-"))
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(n, ext)| {
                n.parse::<u32>().is_ok() && ["png", "jpg", "webp"].contains(&ext)
            });
        assert!(
            allowed.contains(&entry) || output,
            "unexpected {entry} in {} (only the original, sidecar, outputs and error.json)",
            dir.display()
        );
    }
    Quarantined { dir, error }
}

fn same_entry(path: &Path, dropped: &Dropped) -> bool {
    if path.file_name().and_then(|n| n.to_str()) != Some(dropped.name()) {
        return false;
    }
    let Ok(meta) = path.symlink_metadata() else {
        return false;
    };
    match &dropped.kind {
        Kind::File(bytes) | Kind::Defaults(bytes) => {
            meta.file_type().is_file() && std::fs::read(path).is_ok_and(|b| b == *bytes)
        }
        Kind::Symlink(target) => {
            meta.file_type().is_symlink() && std::fs::read_link(path).is_ok_and(|t| t == *target)
        }
        Kind::Fifo => meta.file_type().is_fifo(),
        Kind::Socket => meta.file_type().is_socket(),
    }
}

/// Where the entry dropped as `dropped` is now: every matching path (same name and content)
/// in the inbox (at its own place), the work area, the outbox and the quarantine.
pub fn locations(env: &TestEnv, dropped: &Dropped) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let in_inbox = env.inbox.join(&dropped.rel);
    if same_entry(&in_inbox, dropped) {
        found.push(in_inbox);
    }
    for area in [env.work_dir(), env.outbox.clone(), env.quarantine.clone()] {
        found.extend(
            walk_paths(&area)
                .into_iter()
                .filter(|p| same_entry(p, dropped)),
        );
    }
    found
}

/// SPEC.md, A job: "Every input image ends in exactly one of: the outbox, the quarantine, or
/// still pending (inbox or work area). Nothing is ever deleted, duplicated". `_defaults.yaml`
/// files stay where they were.
pub fn assert_nothing_lost(env: &TestEnv) {
    for dropped in env.dropped() {
        let found = locations(env, &dropped);
        if matches!(dropped.kind, Kind::Defaults(_)) {
            assert_eq!(
                found,
                vec![env.inbox.join(&dropped.rel)],
                "{} must stay in the inbox, untouched, and nowhere else\n{}",
                dropped.rel,
                env.describe()
            );
            continue;
        }
        assert_eq!(
            found.len(),
            1,
            "{} must be in exactly one place, found {found:?}\n{}",
            dropped.rel,
            env.describe()
        );
    }
}

/// The entry dropped at `rel` is still pending: in the inbox or the work area, not in the
/// outbox or quarantine.
pub fn assert_pending(env: &TestEnv, rel: &str) {
    let dropped = env.dropped_at(rel);
    let found = locations(env, &dropped);
    let pending = |p: &PathBuf| p.starts_with(&env.inbox);
    assert!(
        found.len() == 1 && pending(&found[0]),
        "{rel} should be pending (inbox or work area), found {found:?}\n{}",
        env.describe()
    );
}

/// The form fields of `meta.request` compared with those sent, value by value. A number in
/// `request` matches the same text sent (SPEC.md example writes `"num_images": 2`).
pub fn assert_request_matches(meta: &Value, sent: &[(String, String)]) {
    let request = meta["request"].as_object().expect("request is an object");
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut recorded: Vec<(String, String)> = Vec::new();
    for (k, v) in request {
        match v {
            // A repeated form field (e.g. style_codes) may be recorded as a list.
            Value::Array(items) => recorded.extend(items.iter().map(|i| (k.clone(), as_text(i)))),
            other => recorded.push((k.clone(), as_text(other))),
        }
    }
    let mut sent = sent.to_vec();
    recorded.sort();
    sent.sort();
    assert_eq!(
        recorded, sent,
        "metadata request vs the form fields the API received"
    );
}

/// SPEC.md, A job: "Nothing is ever ... left half-written in the outbox or quarantine". No
/// `.part` download, no `.remixd-incoming-*` staging folder (a cross-filesystem publish), and
/// every folder holding files is a complete job folder: `metadata.json` in the outbox,
/// `error.json` in the quarantine (`quarantine/.requeued/` aside).
pub fn assert_no_debris(env: &TestEnv) {
    for (root, marker) in [
        (&env.outbox, "metadata.json"),
        (&env.quarantine, "error.json"),
    ] {
        let mut dirs = std::collections::BTreeSet::new();
        for path in walk_paths(root) {
            let rel = path.strip_prefix(root).unwrap();
            if rel.starts_with(".requeued") || is_gallery_page(rel) {
                continue;
            }
            for part in rel.components() {
                let part = part.as_os_str().to_string_lossy();
                assert!(
                    !part.ends_with(".part") && !part.starts_with(".remixd-incoming-"),
                    "leftover {} in {}\n{}",
                    rel.display(),
                    root.display(),
                    env.describe()
                );
            }
            dirs.insert(path.parent().unwrap().to_path_buf());
        }
        for dir in dirs {
            assert!(
                dir.join(marker).is_file(),
                "{} has files but no {marker}: a half-built job folder\n{}",
                dir.display(),
                env.describe()
            );
        }
    }
}

/// SPEC.md, The outbox: "Beside the job folders, when `output.gallery` is on, remixd writes the
/// gallery and nothing else": `index.html`, `index-N.html` (in the root and in subfolders) and
/// the stylesheet under `.remixd-gallery/`.
pub fn is_gallery_page(rel: &Path) -> bool {
    let name = rel.file_name().unwrap_or_default().to_string_lossy();
    let numbered = name
        .strip_prefix("index-")
        .and_then(|n| n.strip_suffix(".html"))
        .is_some_and(|n| n.parse::<u32>().is_ok());
    rel.starts_with(".remixd-gallery") || name == "index.html" || numbered
}

/// Every dropped image and sidecar ended in exactly one place, and that place is the outbox
/// or the quarantine (nothing pending); each image's folder is complete (checked by
/// [`assert_published`] or [`assert_quarantined`] with the reason its `error.json` names).
/// Returns the images that were quarantined, with their reasons.
pub fn assert_all_ended(env: &TestEnv) -> Vec<(String, String)> {
    assert_nothing_lost(env);
    assert_no_debris(env);
    let mut quarantined = Vec::new();
    for dropped in env.dropped() {
        let found = locations(env, &dropped);
        assert!(
            !found[0].starts_with(&env.inbox),
            "{} is still pending at {}\n{}",
            dropped.rel,
            found[0].display(),
            env.describe()
        );
        if is_sidecar_name(dropped.name()) {
            continue;
        }
        if found[0].starts_with(&env.outbox) {
            assert_published(env, &dropped.rel);
        } else {
            let error = read_json(&found[0].with_file_name("error.json"));
            let reason = error["reason"].as_str().unwrap_or_default().to_string();
            assert_quarantined(env, &dropped.rel, &reason);
            quarantined.push((dropped.rel.clone(), reason));
        }
    }
    quarantined
}

/// How long a process may take, at most, between the moment the fake handed its answer to
/// the server and the moment that answer is durably journaled (HTTP read, parse, write and
/// fsync on a loaded two-core machine). A process that lived longer than this after its
/// answer left the fake had recorded it, so the image must never be uploaded again.
pub const JOURNAL_SLACK: Duration = Duration::from_secs(1);

/// One SIGKILL of the process whose uploads come `via` this tag ([`Upload::via`]): it was
/// certainly alive at `before` and certainly dead at `dead`.
#[derive(Debug, Clone)]
pub struct Kill {
    /// The [`Upload::via`] of the killed process's uploads.
    pub process: String,
    /// Just before the signal was sent.
    pub before: Instant,
    /// Once the process was reaped.
    pub dead: Instant,
}

/// The answer ends the job's submissions (a 200 with images), unlike a transient error.
pub fn is_final_answer(upload: &Upload) -> bool {
    upload.status == 200
}

/// SPEC.md, A job: "a job whose API answer was journaled is never submitted again"; Many
/// processes: "each image is processed by exactly one of them".
///
/// The rule, for one image's uploads in arrival order: an upload after one that got a final
/// answer is allowed only when the process that sent the earlier one was killed before it
/// could have journaled that answer. The killing kill is the first kill of that process (same
/// [`Upload::via`]) reaped after the earlier upload arrived. The process could not have read
/// the answer before the fake handed it over (`answered_at`; never, if the fake never did),
/// and it had surely journaled it once it had lived [`JOURNAL_SLACK`] longer. So a re-upload
/// is a violation when its predecessor's sender was never killed after sending it (a live
/// process's answer, or two live processes running one job), or when that kill came more
/// than [`JOURNAL_SLACK`] after the answer was handed over.
pub fn reupload_violations(rel: &str, uploads: &[Upload], kills: &[Kill]) -> Vec<String> {
    let mut out = Vec::new();
    // In order of arrival (headers received), not of the end of the body.
    let mut uploads = uploads.to_vec();
    uploads.sort_by_key(|u| u.at);
    for pair in uploads.windows(2) {
        let (first, again) = (&pair[0], &pair[1]);
        if !is_final_answer(first) {
            continue;
        }
        let killer = kills
            .iter()
            .find(|k| k.process == first.via && k.dead > first.at);
        match (killer, first.answered_at) {
            (None, _) => out.push(format!(
                "{rel}: uploaded again (via {:?}) {:?} after an answered upload (via {:?}) \
                 whose sender was not killed",
                again.via,
                again.at.duration_since(first.at),
                first.via
            )),
            (Some(k), Some(answered)) if k.before > answered + JOURNAL_SLACK => {
                out.push(format!(
                    "{rel}: its answer was handed over {:?} before its sender was killed \
                     (more than {JOURNAL_SLACK:?} to journal it), yet it was uploaded again",
                    k.before.duration_since(answered)
                ));
            }
            _ => {}
        }
    }
    if !out.is_empty() {
        out.push(format!("  {rel}'s uploads: {}", timeline(&uploads, kills)));
    }
    out
}

/// Each upload as `via@+ms→status(answered +ms)`, kills as `KILL via@+ms`, times from the
/// first upload: for failure messages.
fn timeline(uploads: &[Upload], kills: &[Kill]) -> String {
    let Some(t0) = uploads.first().map(|u| u.at) else {
        return String::new();
    };
    let ms = |t: Instant| {
        if t >= t0 {
            format!("+{}", t.duration_since(t0).as_millis())
        } else {
            format!("-{}", t0.duration_since(t).as_millis())
        }
    };
    let mut items: Vec<(Instant, String)> = uploads
        .iter()
        .map(|u| {
            let answered = u.answered_at.map_or_else(|| "never".into(), ms);
            (
                u.at,
                format!(
                    "{:?}@{}→{} (answered {answered})",
                    u.via,
                    ms(u.at),
                    u.status
                ),
            )
        })
        .collect();
    items.extend(
        kills
            .iter()
            .map(|k| (k.before, format!("KILL {:?}@{}", k.process, ms(k.before)))),
    );
    items.sort_by_key(|(t, _)| *t);
    items
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(", ")
}
