//! What the inbox takes and leaves: ignored names, extensions in any case, bursts of files,
//! several processes on one inbox, and `requeue` bringing quarantined jobs back.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::asserts::{assert_nothing_lost, assert_pending, assert_published, assert_quarantined};
use crate::daemon::{Daemon, TIMEOUT, run_to_end, start_with_fake};
use crate::env::{API_KEY, TestEnv, sha256};
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// SPEC.md, The inbox: "folders and files whose names start with . or ~, and names ending in
/// .tmp .part .partial .crdownload .swp, are ignored". They are neither submitted nor
/// quarantined, and stay where they are.
#[test]
fn ignored_names_are_left_alone() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let ignored = [
        ".hidden.png",
        "~lock.png",
        "photo.png.part",
        "photo.png.partial",
        "photo.png.crdownload",
        "notes.tmp",
        ".swapfile.swp",
        "x.swp",
        ".secret/inside.png",
    ];
    for (i, name) in ignored.iter().enumerate() {
        env.drop_file(name, images::png(20, 20, 700 + i as u64));
    }
    env.drop_file(".hidden.txt", "not a sidecar for anything");
    // Dropped after the ignored ones with the same settle time: once it is done, they would
    // have been handled too.
    env.drop_file("plain.txt", "the only real job");
    env.drop_file("plain.png", images::png(20, 20, 799));
    d.wait_completed("plain.png");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(fake.uploads().len(), 1, "an ignored file was submitted");
    for name in ignored {
        assert!(
            d.events().iter().all(|e| e["file"] != name),
            "{name} is ignored but appears in the logs"
        );
        assert_pending(&env, name);
        assert!(env.inbox.join(name).exists(), "{name} was moved");
    }
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "An image is a file named *.png *.jpg *.jpeg *.webp (any case)"; the
/// original keeps its name in the outbox.
#[test]
fn extensions_in_any_case_are_images() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("UPPER.txt", "upper");
    env.drop_file("UPPER.PNG", images::png(20, 20, 710));
    env.drop_file("Mixed.txt", "mixed");
    env.drop_file("Mixed.JpEg", images::jpeg(40, 40, 711));
    d.wait_completed("UPPER.PNG");
    d.wait_completed("Mixed.JpEg");
    assert_published(&env, "UPPER.PNG");
    assert_published(&env, "Mixed.JpEg");
    d.stop();
}

/// SPEC.md, A job: every input ends in exactly one place; concurrency does not mix jobs up.
/// Also SPEC.md, Configuration: `umask: "0007"` — what remixd creates is closed to others.
#[test]
fn a_burst_of_images_is_each_published_once() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let mut shas = Vec::new();
    for i in 0..12u64 {
        let png = images::png(20, 20, 720 + i);
        shas.push(sha256(&png));
        env.drop_file(&format!("burst/b{i}.txt"), format!("burst {i}"));
        env.drop_file(&format!("burst/b{i}.png"), &png);
    }
    for i in 0..12 {
        d.wait_completed(&format!("burst/b{i}.png"));
    }
    for (i, sha) in shas.iter().enumerate() {
        assert_eq!(fake.uploads_of(sha).len(), 1, "b{i}.png uploads");
        let p = assert_published(&env, &format!("burst/b{i}.png"));
        assert_eq!(p.meta["request"]["prompt"], format!("burst {i}"));
        for made in [p.dir.join("metadata.json"), p.dir.clone()] {
            let mode = std::fs::metadata(&made).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o007,
                0,
                "{} is open to others: {mode:o}",
                made.display()
            );
        }
    }
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, Many processes, one inbox: "each image is processed by exactly one of them".
#[test]
fn two_processes_share_one_inbox() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_default(Reply::ok().delayed(Duration::from_millis(100)));
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let mut first = Daemon::start(&env, &[]);
    let mut second = Daemon::start(&env, &[]);
    first.wait_ready();
    second.wait_ready();
    let mut shas = Vec::new();
    for i in 0..10u64 {
        let png = images::png(20, 20, 740 + i);
        shas.push(sha256(&png));
        env.drop_file(&format!("s{i}.txt"), format!("shared {i}"));
        env.drop_file(&format!("s{i}.png"), &png);
    }
    let files: Vec<String> = (0..10).map(|i| format!("s{i}.png")).collect();
    let deadline = Instant::now() + TIMEOUT;
    let ends = |name: &str| {
        let mut all = first.events_named(name);
        all.extend(second.events_named(name));
        all
    };
    while !files.iter().all(|f| {
        ends("job.completed")
            .iter()
            .any(|e| e["file"] == f.as_str())
    }) {
        assert!(
            Instant::now() < deadline && ends("job.quarantined").is_empty(),
            "not every image was published\n{}\n{}",
            first.dump(),
            second.dump()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (file, sha) in files.iter().zip(&shas) {
        assert_eq!(
            fake.uploads_of(sha).len(),
            1,
            "{file} was submitted more than once"
        );
        let completions = ends("job.completed")
            .iter()
            .filter(|e| e["file"] == file.as_str())
            .count();
        assert_eq!(completions, 1, "{file} completed by both processes");
        assert_published(&env, file);
    }
    first.stop();
    second.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, Running it: "requeue moves each job's original and sidecar back to their inbox
/// folder and removes the job's quarantine folder; whatever else it held (error.json ...)
/// moves to quarantine/.requeued/ under the same folder name".
#[test]
fn requeue_brings_a_quarantined_job_back() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::status(400, r#"{"error": "temporarily refused"}"#));
    env.drop_file("a/back.txt", "second chance");
    env.drop_file("a/back.png", images::png(20, 20, 760));
    d.wait_quarantined("a/back.png", "rejected_by_api");
    let q = assert_quarantined(&env, "a/back.png", "rejected_by_api");
    d.stop();
    let folder = q.dir.file_name().unwrap().to_owned();

    let cfg = env.config_path.to_string_lossy().into_owned();
    let (status, stdout, stderr) =
        run_to_end(env.root(), &["requeue", "-c", &cfg, "--all"], Some(API_KEY));
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!q.dir.exists(), "the quarantine folder is still there");
    assert_pending(&env, "a/back.png");
    assert_pending(&env, "a/back.txt");
    let kept = walk_requeued(&env, &folder);
    assert!(
        kept.iter().any(|p| p.ends_with("error.json")),
        "error.json not kept under .requeued/: {kept:?}\n{}",
        env.describe()
    );

    let mut again = Daemon::start(&env, &["--once"]);
    assert_eq!(again.wait_exit(TIMEOUT).code(), Some(0), "{}", again.dump());
    again.wait_completed("a/back.png");
    assert_published(&env, "a/back.png");
    assert_nothing_lost(&env);
}

fn walk_requeued(env: &TestEnv, folder: &std::ffi::OsStr) -> Vec<std::path::PathBuf> {
    crate::env::walk_paths(&env.quarantine.join(".requeued"))
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == folder))
        .collect()
}

/// SPEC.md, The quarantine (last paragraph): "when the API or the network is down ...
/// remixd pauses submissions, keeps every job pending, logs it, and probes with backoff ...
/// until it works again"; Logs: `api.paused`, `api.resumed`.
#[test]
fn api_outage_pauses_then_resumes_without_quarantine() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("retry.max_attempts", "2")]);
    fake.set_default(Reply::status(503, r#"{"error": "maintenance"}"#));
    env.drop_file("wait.txt", "wait for it");
    env.drop_file("wait.png", images::png(20, 20, 770));
    let paused = d.wait_for_event("api.paused", |_| true);
    assert_eq!(paused["reason"], "unavailable", "{paused}");
    // Well past max_attempts: still pending, never quarantined.
    d.wait_for("probes past max_attempts", |_| fake.uploads().len() >= 4);
    assert!(d.events_named("job.quarantined").is_empty(), "{}", d.dump());
    fake.set_default(Reply::ok());
    d.wait_completed("wait.png");
    d.wait_for_event("api.resumed", |_| true);
    assert_published(&env, "wait.png");
    d.stop();
    assert_nothing_lost(&env);
}

/// A file rewritten after it settled, while it waits for a job slot, is taken in its new form
/// and never half-written (issue: "cost that follows the work": a settled file is not looked
/// at again until its claim, where it is checked once more). Polling once an hour, only that
/// claim-time check can see the rewrite: with one request at a time and a slow API the four
/// job slots are full, so the fifth image has settled and waits; it is rewritten in place,
/// slowly, and a slot frees while the rewrite is still going on.
#[test]
fn a_file_rewritten_after_it_settled_is_taken_in_its_new_form() {
    let env = TestEnv::new();
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(600), Duration::from_millis(600), 7);
    env.config()
        .fake(&fake)
        .set_all(&[
            ("watch.mode", "poll"),
            ("watch.poll_interval", "1h"),
            ("watch.settle", "1s"),
            ("watch.sidecar_wait", "0s"),
            ("limits.concurrency", "1"),
        ])
        .write();
    let names: Vec<String> = (0..5).map(|i| format!("img{i}.png")).collect();
    for (i, name) in names.iter().enumerate() {
        env.drop_file(&name.replace(".png", ".txt"), "a cat");
        env.drop_file(name, images::png(20, 20, 900 + i as u64));
    }
    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    let deadline = Instant::now() + TIMEOUT;
    let waiting = loop {
        let claimed: Vec<String> = d
            .events_named("job.claimed")
            .iter()
            .filter_map(|e| e["file"].as_str().map(str::to_owned))
            .collect();
        if claimed.len() >= 4 {
            assert_eq!(claimed.len(), 4, "only four job slots: {claimed:?}");
            break names.iter().find(|n| !claimed.contains(n)).unwrap().clone();
        }
        assert!(
            Instant::now() < deadline,
            "four claims never came:\n{}",
            d.dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let index: u64 = waiting[3..4].parse().unwrap();
    let old = images::png(20, 20, 900 + index);
    let new = images::png(64, 64, 999);
    // 7.5 s of writing, a piece every 500 ms (less than `settle`): the first job frees its
    // slot after about 1.2 s (upload and download, 600 ms each), and a job claimed then would
    // send its upload after the three before it, about 4 s later: still mid-write.
    env.rewrite_slowly(&waiting, &new, 16, Duration::from_millis(500));
    d.wait_completed(&waiting);
    let sent = fake.uploads();
    let mine: Vec<_> = sent
        .iter()
        .filter(|u| {
            ![0, 1, 2, 3, 4]
                .iter()
                .any(|i| *i != index && u.sha256 == sha256(&images::png(20, 20, 900 + i)))
        })
        .collect();
    assert_eq!(mine.len(), 1, "one upload for {waiting}");
    assert_eq!(
        mine[0].sha256,
        sha256(&new),
        "{waiting} went in its new form, whole"
    );
    assert!(
        fake.uploads_of(&sha256(&old)).is_empty(),
        "the bytes it settled with went"
    );
    for name in &names {
        d.wait_completed(name);
    }
    d.stop();
    assert_nothing_lost(&env);
}

/// Issue 7, watching: each folder the inbox covers has a watch of its own and remixd's work
/// area (`<inbox>/.remixd`) has none, so a job's own steps raise no events. A folder made,
/// moved in or renamed long after start is watched as well: a file dropped into it later is
/// seen by its event, with the reconcile rescan an hour away.
#[test]
fn each_inbox_folder_is_watched_and_the_work_area_is_not() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.inbox.join("brand/2026")).unwrap();
    std::fs::create_dir_all(env.inbox.join("kept/deep")).unwrap();
    let (_fake, mut d) = start_with_fake(
        &env,
        &[("watch.mode", "native"), ("watch.rescan_interval", "1h")],
    );
    env.drop_file("first.txt", "first");
    env.drop_file("first.png", images::png(20, 20, 950));
    d.wait_completed("first.png");

    let outside = env.config_path.parent().unwrap().join("staging");
    std::fs::create_dir_all(outside.join("deep")).unwrap();
    std::fs::rename(&outside, env.inbox.join("moved")).unwrap();
    std::fs::create_dir(env.inbox.join("later")).unwrap();
    std::fs::rename(env.inbox.join("brand"), env.inbox.join("renamed")).unwrap();
    // Past the few seconds in which a new folder is rescanned whatever its events say.
    std::thread::sleep(Duration::from_secs(5));
    let dropped = [
        "later/a.png",
        "moved/b.png",
        "moved/deep/c.png",
        "renamed/2026/d.png",
        "kept/deep/e.png",
    ];
    for (i, rel) in dropped.iter().enumerate() {
        env.drop_file(&rel.replace(".png", ".txt"), "found by its event");
        env.drop_file(rel, images::png(20, 20, 951 + i as u64));
    }
    for rel in dropped {
        d.wait_completed(rel);
    }

    let watched = inotify_watched_inodes(d.pid());
    let ino =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    for folder in [
        "",
        "kept",
        "kept/deep",
        "later",
        "moved",
        "moved/deep",
        "renamed",
        "renamed/2026",
    ] {
        assert!(
            watched.contains(&ino(&env.inbox.join(folder))),
            "inbox/{folder} is not watched: {watched:?}"
        );
    }
    let work_area = env.inbox.join(".remixd");
    let mut stack = vec![work_area.clone()];
    let mut work_folders = 0;
    while let Some(dir) = stack.pop() {
        assert!(
            !watched.contains(&ino(&dir)),
            "{} in the work area is watched",
            dir.display()
        );
        work_folders += 1;
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(work_folders > 3, "the work area has its folders");
    d.stop();
    assert_nothing_lost(&env);
}

/// The inodes a process's inotify instances watch, from `/proc/PID/fdinfo`.
fn inotify_watched_inodes(pid: u32) -> Vec<u64> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        for line in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            let ino = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("ino:"))
                .expect("an inotify line names its inode");
            inodes.push(u64::from_str_radix(ino, 16).unwrap());
        }
    }
    assert!(!inodes.is_empty(), "no inotify watch found for pid {pid}");
    inodes
}
