//! A hostile inbox (issue 4): symlinks, special files, hard links, odd names, hostile
//! sidecars and hostile API answers, dropped into a running daemon that must stay up,
//! quarantine each with the right reason, upload nothing it should not, write nothing
//! outside its folders, and never reveal the key.
//!
//! Tests that check several entries collect every failure before failing, so one run shows
//! the whole picture.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::asserts::{assert_nothing_lost, assert_published, assert_quarantined};
use crate::daemon::{Daemon, TIMEOUT, run_to_end, start_with_fake};
use crate::env::{API_KEY, TestEnv, sha256, walk_paths};
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// Failures gathered across the cases of one test.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn finish(self, d: &Daemon, env: &TestEnv) {
        assert!(
            self.0.is_empty(),
            "{} failure(s):\n- {}\n{}\n{}",
            self.0.len(),
            self.0.join("\n- "),
            env.describe(),
            d.dump()
        );
    }
}

/// A default prompt, so that anything followed or read by mistake would be uploaded and
/// show up in the fake's records.
const DEFAULT_PROMPT: (&str, &str) = ("defaults.prompt", "the default prompt");

/// The end event (`job.completed` / `job.quarantined`) for `file`, if there is one yet.
fn end_of(d: &Daemon, file: &str) -> Option<Value> {
    d.events().into_iter().find(|e| {
        (e["event"] == "job.completed" || e["event"] == "job.quarantined") && e["file"] == file
    })
}

/// Waits until every file in `files` has ended, or the global timeout; never panics on a
/// missing end (the caller reports it), but does fail when remixd exits.
fn wait_all_ended(d: &mut Daemon, files: &[&str]) {
    let deadline = Instant::now() + TIMEOUT;
    d.wait_for("every hostile entry to end", |events| {
        Instant::now() >= deadline
            || files.iter().all(|f| {
                events.iter().any(|e| {
                    (e["event"] == "job.completed" || e["event"] == "job.quarantined")
                        && e["file"] == *f
                })
            })
    });
}

/// Every entry (folders too) under `dir`, never following symlinks.
fn walk_everything(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_everything(&path));
        }
    }
    out
}

/// Issue 4: nothing may be written "outside the inbox, outbox, quarantine and work area".
/// Every entry of the test's temporary folder is under one of the three folders, is the
/// config, or is under one of `outside` (what the test itself placed there).
fn assert_confined(env: &TestEnv, outside: &[&Path]) {
    let allowed = |p: &Path| {
        p.starts_with(&env.inbox)
            || p.starts_with(&env.outbox)
            || p.starts_with(&env.quarantine)
            || p == env.config_path
            || outside.iter().any(|o| p.starts_with(o) || o.starts_with(p))
    };
    let strays: Vec<PathBuf> = walk_everything(env.root())
        .into_iter()
        .filter(|p| !allowed(p))
        .collect();
    assert!(
        strays.is_empty(),
        "remixd wrote outside its folders: {strays:?}\n{}",
        env.describe()
    );
}

/// SPEC.md, Logs: "The API key never appears in any log line, metadata or error file." No
/// file anywhere under the test's folder holds it (the key only ever lived in the
/// environment).
fn assert_key_on_no_disk(env: &TestEnv) {
    for path in walk_paths(env.root()) {
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if !meta.is_file() || meta.len() > 16 * 1024 * 1024 {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes
                .windows(API_KEY.len())
                .any(|w| w == API_KEY.as_bytes()),
            "the API key is written in {}",
            path.display()
        );
    }
}

/// The entries named `name` (any bytes) under the outbox and the quarantine.
fn filed_as(env: &TestEnv, name: &OsStr) -> Vec<PathBuf> {
    [&env.outbox, &env.quarantine]
        .into_iter()
        .flat_map(|area| walk_paths(area))
        .filter(|p| p.file_name() == Some(name))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Symlinks
// ---------------------------------------------------------------------------------------

/// Issue 4, A hostile inbox: "Symlinks (to files, to folders, dangling, loops) are never
/// followed ... the symlink itself, not its target, is what is moved." Each link is
/// quarantined `not_regular_file` as a link with its own target, the targets are untouched,
/// and nothing behind a link is ever uploaded (a default prompt is configured, so a followed
/// image would be).
#[test]
fn symlinks_of_every_kind_are_quarantined_as_themselves() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let elsewhere = env.root().join("elsewhere");
    let album = elsewhere.join("album");
    std::fs::create_dir_all(&album).unwrap();
    let real = elsewhere.join("real.png");
    let real_png = images::png(20, 20, 9001);
    std::fs::write(&real, &real_png).unwrap();
    std::fs::write(elsewhere.join("real.txt"), "a prompt behind a link").unwrap();
    let album_png = images::png(20, 20, 9002);
    std::fs::write(album.join("pic.png"), &album_png).unwrap();
    std::fs::write(album.join("pic.txt"), "a prompt inside a linked folder").unwrap();
    let hostname = Path::new("/etc/hostname");
    let hostname_before = std::fs::read(hostname).ok();

    let links: Vec<(&str, PathBuf)> = vec![
        ("to-file.png", real.clone()),
        ("to-folder", album.clone()),
        ("to-folder.png", album.clone()),
        ("dangling.png", elsewhere.join("nothing-here.png")),
        ("loop-a.png", PathBuf::from("loop-b.png")),
        ("loop-b.png", PathBuf::from("loop-a.png")),
        ("self.png", PathBuf::from("self.png")),
        ("outside.png", hostname.to_path_buf()),
        ("deep/outside.txt", hostname.to_path_buf()),
    ];
    for (rel, target) in &links {
        env.drop_symlink(rel, target);
    }
    let names: Vec<&str> = links.iter().map(|(rel, _)| *rel).collect();
    wait_all_ended(&mut d, &names);

    let mut f = Failures::default();
    for (rel, target) in &links {
        let Some(end) = end_of(&d, rel) else {
            f.0.push(format!("{rel}: never quarantined (still in the inbox?)"));
            continue;
        };
        f.check(
            end["event"] == "job.quarantined" && end["reason"] == "not_regular_file",
            || format!("{rel}: expected not_regular_file, got {end}"),
        );
        let name = Path::new(rel).file_name().unwrap();
        let found = filed_as(&env, name);
        f.check(found.len() == 1, || {
            format!("{rel}: expected one entry in the quarantine, found {found:?}")
        });
        for path in &found {
            let is_link = path.symlink_metadata().is_ok_and(|m| m.is_symlink());
            f.check(is_link, || {
                format!("{rel}: {} is not the symlink itself", path.display())
            });
            let now = std::fs::read_link(path).ok();
            f.check(now.as_ref() == Some(target), || {
                format!("{rel}: readlink is {now:?}, was {}", target.display())
            });
        }
        f.check(env.inbox.join(rel).symlink_metadata().is_err(), || {
            format!("{rel}: still in the inbox")
        });
    }
    f.check(std::fs::read(&real).unwrap() == real_png, || {
        "the file target changed".into()
    });
    f.check(
        std::fs::read(album.join("pic.png")).unwrap() == album_png,
        || "the linked folder's image changed".into(),
    );
    let album_now: Vec<String> = TestEnv::tree(&album);
    f.check(album_now == ["pic.png", "pic.txt"], || {
        format!("the linked folder changed: {album_now:?}")
    });
    f.check(std::fs::read(hostname).ok() == hostname_before, || {
        "/etc/hostname changed".into()
    });
    let uploads = fake.uploads();
    f.check(uploads.is_empty(), || {
        format!(
            "something behind a link was uploaded: {:?}",
            uploads.iter().map(|u| &u.file_name).collect::<Vec<_>>()
        )
    });
    let followed = d
        .events()
        .into_iter()
        .filter(|e| e["file"].as_str().is_some_and(|s| s.contains("pic.")))
        .count();
    f.check(followed == 0, || {
        format!("remixd logged {followed} events about files inside the linked folder")
    });
    f.finish(&d, &env);
    assert_confined(&env, &[&elsewhere]);
    d.stop();
    assert_nothing_lost(&env);
    assert_key_on_no_disk(&env);
}

/// Issue 4: a symlinked sidecar must not smuggle a file's content into the prompt. The image
/// beside it goes on with the defaults; the link itself is quarantined; the secret behind it
/// is never sent.
#[test]
fn a_symlinked_sidecar_is_never_read() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let secret = env.root().join("secret.txt");
    std::fs::write(&secret, "SECRET-9f2c behind a sidecar link").unwrap();
    let png = images::png(20, 20, 9010);
    env.drop_symlink("leak.txt", &secret);
    env.drop_file("leak.png", &png);
    d.wait_quarantined("leak.txt", "not_regular_file");
    d.wait_completed("leak.png");
    let q = assert_quarantined(&env, "leak.txt", "not_regular_file");
    assert!(q.dir.join("leak.txt").is_symlink());
    let ups = fake.uploads_of(&sha256(&png));
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].field("prompt"), Some("the default prompt"));
    for up in fake.uploads() {
        assert!(
            up.fields.iter().all(|(_, v)| !v.contains("SECRET-9f2c")),
            "the linked file was read and sent: {:?}",
            up.fields
        );
    }
    assert_confined(&env, &[&secret]);
    d.stop();
    assert_nothing_lost(&env);
}

/// Issue 4: `_defaults.yaml` as a symlink to a file outside the inbox is never read (open
/// with O_NOFOLLOW): its content is never sent, and the images it would govern are
/// quarantined rather than sent without it.
#[test]
fn a_symlinked_defaults_file_is_never_read() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let secret = env.root().join("secret.yaml");
    std::fs::write(&secret, "prompt: SECRET-51ab from a linked defaults file\n").unwrap();
    std::fs::create_dir_all(env.inbox.join("sub")).unwrap();
    std::os::unix::fs::symlink(&secret, env.inbox.join("sub/_defaults.yaml")).unwrap();
    env.drop_file("sub/gov.png", images::png(20, 20, 9011));
    let end = d.wait_job_end("sub/gov.png");
    for up in fake.uploads() {
        assert!(
            up.fields.iter().all(|(_, v)| !v.contains("SECRET-51ab")),
            "the linked defaults file was read and sent: {:?}",
            up.fields
        );
    }
    assert_eq!(end["reason"], "invalid_sidecar", "{end}");
    assert!(env.inbox.join("sub/_defaults.yaml").is_symlink());
    assert_confined(&env, &[&secret]);
    d.stop();
}

// ---------------------------------------------------------------------------------------
// Special files and hard links
// ---------------------------------------------------------------------------------------

/// Issue 4: "FIFOs, sockets and devices never block a thread. Files with other hard links are
/// refused. All of these are quarantined as not_regular_file". A FIFO posing as a sidecar or
/// as `_defaults.yaml` is never opened for a blocking read either; afterwards a plain image
/// still completes.
#[test]
fn fifos_sockets_devices_and_hard_links_never_block() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let twin_outside = env.root().join("elsewhere/twin.png");
    std::fs::create_dir_all(twin_outside.parent().unwrap()).unwrap();
    let twin_png = images::png(20, 20, 9020);
    std::fs::write(&twin_outside, &twin_png).unwrap();

    env.drop_fifo("pipe.png");
    env.drop_fifo("pipe-sidecar.txt");
    env.drop_fifo("fifo-folder/_defaults.yaml");
    env.drop_socket("sock.png");
    env.drop_socket("sock-noext");
    env.drop_hard_link("twin.png", &twin_outside);
    let device = env.inbox.join("null.png");
    let have_device = std::process::Command::new("mknod")
        .args([
            device.as_os_str(),
            OsStr::new("c"),
            OsStr::new("1"),
            OsStr::new("3"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    let beside = images::png(20, 20, 9021);
    env.drop_file("pipe-sidecar.png", &beside);
    env.drop_file("fifo-folder/governed.png", images::png(20, 20, 9022));

    let mut specials = vec![
        "pipe.png",
        "pipe-sidecar.txt",
        "sock.png",
        "sock-noext",
        "twin.png",
    ];
    if have_device {
        specials.push("null.png");
    }
    let mut all = specials.clone();
    all.extend(["pipe-sidecar.png", "fifo-folder/governed.png"]);
    wait_all_ended(&mut d, &all);

    let mut f = Failures::default();
    for rel in &specials {
        let end = end_of(&d, rel);
        f.check(
            end.as_ref().is_some_and(|e| {
                e["event"] == "job.quarantined" && e["reason"] == "not_regular_file"
            }),
            || format!("{rel}: expected not_regular_file, got {end:?}"),
        );
    }
    let beside_end = end_of(&d, "pipe-sidecar.png");
    f.check(
        beside_end.as_ref().is_some_and(|e| e["event"] == "job.completed"),
        || format!("pipe-sidecar.png (its sidecar is a FIFO) should go on with the defaults: {beside_end:?}"),
    );
    let governed = end_of(&d, "fifo-folder/governed.png");
    f.check(governed.is_some(), || {
        "fifo-folder/governed.png (its _defaults.yaml is a FIFO) never ended".into()
    });
    f.check(std::fs::read(&twin_outside).unwrap() == twin_png, || {
        "the other hard link changed".into()
    });
    f.check(fake.uploads_of(&sha256(&twin_png)).is_empty(), || {
        "the hard-linked image was uploaded".into()
    });
    f.finish(&d, &env);

    // Still alive and not blocked: a plain image after all that completes.
    env.drop_file("after.txt", "still working");
    env.drop_file("after.png", images::png(20, 20, 9023));
    d.wait_completed("after.png");
    assert_published(&env, "after.png");
    if have_device {
        let kept = filed_as(&env, OsStr::new("null.png"));
        assert!(
            kept.len() == 1
                && std::os::unix::fs::FileTypeExt::is_char_device(
                    &kept[0].symlink_metadata().unwrap().file_type()
                ),
            "the device entry itself should be in the quarantine: {kept:?}"
        );
    }
    assert_confined(&env, &[twin_outside.parent().unwrap()]);
    d.stop();
    assert_nothing_lost(&env);
}

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// Drops `name` (an image) with a `.txt` sidecar beside it, both named by bytes.
fn drop_named_pair(env: &TestEnv, name: &[u8], seed: u64) -> Vec<u8> {
    let png = images::png(20, 20, seed);
    let stem = &name[..name.len() - ".png".len()];
    let mut sidecar = stem.to_vec();
    sidecar.extend_from_slice(b".txt");
    env.drop_file_named("", OsStr::from_bytes(&sidecar), b"a prompt for an odd name");
    env.drop_file_named("", OsStr::from_bytes(name), &png);
    png
}

/// Waits until an entry named like each of `names` is in the outbox or the quarantine (and
/// the inbox, work area included, holds it no more), or the global timeout.
fn wait_names_filed(d: &mut Daemon, env: &TestEnv, names: &[&[u8]]) {
    let deadline = Instant::now() + TIMEOUT;
    let names: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    let (inbox, outbox, quarantine) = (
        env.inbox.clone(),
        env.outbox.clone(),
        env.quarantine.clone(),
    );
    d.wait_for("odd names to be filed", move |_| {
        let filed = |n: &[u8]| {
            let wanted = OsStr::from_bytes(n);
            let holds = |area: &Path| {
                walk_paths(area)
                    .iter()
                    .any(|p| p.file_name() == Some(wanted))
            };
            (holds(&outbox) || holds(&quarantine)) && !holds(&inbox)
        };
        Instant::now() >= deadline || names.iter().all(|n| filed(n))
    });
}

/// Each odd image name must end, byte-identical, in exactly one place under the outbox or
/// the quarantine, under its own name, and nowhere else.
fn check_named(f: &mut Failures, env: &TestEnv, name: &[u8], png: &[u8]) {
    let shown = String::from_utf8_lossy(name).escape_debug().to_string();
    let name = OsStr::from_bytes(name);
    f.check(env.inbox.join(name).symlink_metadata().is_err(), || {
        format!("{shown}: still in the inbox")
    });
    let found = filed_as(env, name);
    f.check(found.len() == 1, || {
        format!(
            "{shown}: expected in exactly one place in the outbox or quarantine, found {found:?}"
        )
    });
    for path in &found {
        f.check(std::fs::read(path).is_ok_and(|b| b == png), || {
            format!("{shown}: {} is not byte-identical", path.display())
        });
    }
}

/// Issue 4: "File names that ... contain newlines or control characters ... are handled:
/// processed or quarantined, logged escaped, never used to build a path outside the intended
/// folder". Every log line stays one JSON object (checked by `stop`).
#[test]
fn names_with_newlines_and_control_characters_are_handled() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let names: [&[u8]; 6] = [
        b"new\nline.png",
        b"ctl\x01\x1b[31m\x07\x7f.png",
        b"tab\tand\rcr.png",
        b"quote\"back\\slash.png",
        b"{job_id}{subdir}{stem}.png",
        b"x..png",
    ];
    let pngs: Vec<Vec<u8>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| drop_named_pair(&env, n, 9100 + i as u64))
        .collect();
    wait_names_filed(&mut d, &env, &names);
    let mut f = Failures::default();
    for (name, png) in names.iter().zip(&pngs) {
        check_named(&mut f, &env, name, png);
    }
    f.finish(&d, &env);
    assert_confined(&env, &[]);
    d.stop();
    assert_key_on_no_disk(&env);
}

/// Issue 4: a very long name (250 bytes, near NAME_MAX) is processed or quarantined, and the
/// daemon stays up, although `STEM-remix-1.png` and `STEM-JOBID` would be longer than a file
/// name may be.
#[test]

fn a_250_byte_name_is_handled() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let mut name = vec![b'n'; 246];
    name.extend_from_slice(b".png");
    assert_eq!(name.len(), 250);
    let png = drop_named_pair(&env, &name, 9200);
    wait_names_filed(&mut d, &env, &[&name]);
    let mut f = Failures::default();
    check_named(&mut f, &env, &name, &png);
    f.finish(&d, &env);
    env.drop_file("after.txt", "still working");
    env.drop_file("after.png", images::png(20, 20, 9201));
    d.wait_completed("after.png");
    assert_confined(&env, &[]);
    d.stop();
}

/// SPEC.md, The inbox: names starting with `.` are ignored, so `..png`, `...` and `.. .png`
/// (names that look like `..`) stay exactly where they are, untouched, and nothing escapes.
#[test]
fn dot_dot_names_are_left_alone() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let names = ["..png", "...", ".. .png", "sub/..png"];
    for (i, name) in names.iter().enumerate() {
        env.drop_file(name, images::png(20, 20, 9300 + i as u64));
    }
    env.drop_file("marker.png", images::png(20, 20, 9310));
    d.wait_completed("marker.png");
    std::thread::sleep(Duration::from_millis(500));
    for name in names {
        let dropped = env.dropped_at(name);
        assert_eq!(
            std::fs::read(env.inbox.join(name)).ok().as_deref(),
            Some(dropped.bytes()),
            "{name} must stay in the inbox untouched\n{}",
            env.describe()
        );
    }
    assert_eq!(fake.uploads().len(), 1, "an ignored name was uploaded");
    assert_confined(&env, &[]);
    d.stop();
    assert_nothing_lost(&env);
}

/// Issue 4: "File names that are not UTF-8 ... are handled: processed or quarantined". The
/// entry, under its own bytes, ends in the outbox or the quarantine.
#[test]

fn a_name_that_is_not_utf8_is_handled() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let name: &[u8] = b"\xff\xfe.png";
    let png = drop_named_pair(&env, name, 9400);
    wait_names_filed(&mut d, &env, &[name]);
    let mut f = Failures::default();
    check_named(&mut f, &env, name, &png);
    let mut sidecar = name[..name.len() - 4].to_vec();
    sidecar.extend_from_slice(b".txt");
    f.check(
        env.inbox
            .join(OsStr::from_bytes(&sidecar))
            .symlink_metadata()
            .is_err(),
        || "its sidecar is still in the inbox".into(),
    );
    f.finish(&d, &env);
    env.drop_file("after.txt", "still working");
    env.drop_file("after.png", images::png(20, 20, 9401));
    d.wait_completed("after.png");
    assert_confined(&env, &[]);
    d.stop();
}

/// Issue 4: "the output layout is checked after substitution". A layout that could climb
/// out of the outbox is either refused at start (exit 2, one line naming `output.layout`) or
/// still files every job below the outbox and the quarantine; nothing lands beside them.
#[test]
fn output_layouts_that_climb_out_never_escape() {
    let layouts = [
        "{subdir}/../../{stem}",
        "/{stem}-{job_id}",
        "{subdir}/./../{job_id}",
        "{stem}/..",
        "..{subdir}/{stem}",
    ];
    for layout in layouts {
        let env = TestEnv::new();
        let fake = FakeApi::start(Mode::Kkiai);
        env.config()
            .fake(&fake)
            .set("output.layout", &json!(layout).to_string())
            .write();
        let config = env.config_path.to_string_lossy().into_owned();
        let (status, _, stderr) = run_to_end(env.root(), &["check", "-c", &config], Some(API_KEY));
        if status.code() == Some(2) {
            assert!(
                stderr.contains("output.layout") && stderr.trim().lines().count() == 1,
                "{layout}: refused, but not in one line naming output.layout: {stderr}"
            );
            continue;
        }
        assert_eq!(status.code(), Some(0), "{layout}: check failed: {stderr}");
        let mut d = Daemon::start(&env, &[]);
        d.wait_ready();
        let stem = format!("escape{}", std::process::id());
        fake.always_for(
            &sha256(&images::png(20, 20, 9501)),
            Reply::status(400, r#"{"error":"refused"}"#),
        );
        env.drop_file(&format!("a/b/{stem}.txt"), "p");
        env.drop_file(&format!("a/b/{stem}.png"), images::png(20, 20, 9500));
        env.drop_file(&format!("a/b/{stem}-q.txt"), "p");
        env.drop_file(&format!("a/b/{stem}-q.png"), images::png(20, 20, 9501));
        let done = d.wait_job_end(&format!("a/b/{stem}.png"));
        let refused = d.wait_job_end(&format!("a/b/{stem}-q.png"));
        assert_eq!(done["event"], "job.completed", "{layout}: {done}");
        assert_eq!(refused["reason"], "rejected_by_api", "{layout}: {refused}");
        for (event, area) in [(&done, &env.outbox), (&refused, &env.quarantine)] {
            let dir = PathBuf::from(event["dir"].as_str().unwrap());
            let real = dir.canonicalize().unwrap();
            assert!(
                real.starts_with(area.canonicalize().unwrap())
                    && real != area.canonicalize().unwrap(),
                "{layout}: the job folder {} is not below {}",
                real.display(),
                area.display()
            );
        }
        assert_confined(&env, &[]);
        let parent = env.root().parent().unwrap();
        let escaped: Vec<PathBuf> = std::fs::read_dir(parent)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(&stem))
            .collect();
        assert!(
            escaped.is_empty(),
            "{layout}: written beside the test folder: {escaped:?}"
        );
        d.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Sidecars
// ---------------------------------------------------------------------------------------

/// The hostile sidecars of `tests/corpus/sidecars/invalid/`, each file's name and bytes.
pub fn invalid_sidecar_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sidecars/invalid");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the corpus is missing: {}",
        dir.display()
    );
    files
}

/// Issue 4: "Sidecars: YAML alias bombs, deep nesting, huge strings and numbers out of range
/// are refused as invalid_sidecar quickly and in bounded memory." Every file of the corpus,
/// dropped beside an image into a running daemon, quarantines the image `invalid_sidecar`
/// within a few seconds, with a message of readable size, and nothing is uploaded.
#[test]
fn hostile_sidecars_are_invalid_sidecar_quickly() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let corpus = invalid_sidecar_corpus();
    let mut images_dropped = Vec::new();
    for (i, (name, bytes)) in corpus.iter().enumerate() {
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let folder = format!("c{i:02}");
        env.drop_file(&format!("{folder}/{stem}.{ext}"), bytes);
        let image = format!("{folder}/{stem}.png");
        env.drop_file(&image, images::png(20, 20, 9600 + i as u64));
        images_dropped.push((image, Instant::now()));
    }
    let files: Vec<&str> = images_dropped.iter().map(|(f, _)| f.as_str()).collect();
    wait_all_ended(&mut d, &files);
    let mut f = Failures::default();
    for (image, _) in &images_dropped {
        let end = end_of(&d, image);
        f.check(
            end.as_ref()
                .is_some_and(|e| e["reason"] == "invalid_sidecar"),
            || format!("{image}: expected invalid_sidecar, got {end:?}"),
        );
        if let Some(end) = end {
            let len = end["message"].as_str().map_or(0, str::len);
            f.check(len < 2048, || {
                format!("{image}: the message is {len} bytes long")
            });
        }
    }
    // All were dropped within moments and settle is 200 ms: refusing each is quick.
    if let Some((_, first)) = images_dropped.first() {
        f.check(first.elapsed() < Duration::from_secs(15), || {
            format!("refusing the corpus took {:?}", first.elapsed())
        });
    }
    f.check(fake.uploads().is_empty(), || {
        format!("{} upload(s) for hostile sidecars", fake.uploads().len())
    });
    f.finish(&d, &env);
    env.drop_file("after.txt", "still working");
    env.drop_file("after.png", images::png(20, 20, 9699));
    d.wait_completed("after.png");
    d.stop();
    assert_nothing_lost(&env);
}

// ---------------------------------------------------------------------------------------
// Hostile API answers
// ---------------------------------------------------------------------------------------

/// A 200 answer with one output at `url`.
fn answer_with_url(url: &str) -> Reply {
    let body = json!({"created": "2025-01-01T00:00:00Z", "data": [{
        "url": url, "prompt": "p", "resolution": "1024x1024", "seed": 1,
        "is_image_safe": true, "style_type": "GENERAL"}]});
    Reply::status(200, &body.to_string())
}

/// Drops `name.png` (+ prompt) whose every upload gets `reply`; returns its bytes.
fn drop_answered(env: &TestEnv, fake: &FakeApi, name: &str, seed: u64, reply: Reply) -> Vec<u8> {
    let png = images::png(20, 20, seed);
    fake.always_for(&sha256(&png), reply);
    env.drop_file(&format!("{name}.txt"), format!("prompt for {name}"));
    env.drop_file(&format!("{name}.png"), &png);
    png
}

/// Issue 4: "The API's answers are hostile too: URLs to non-http(s) schemes". An output URL
/// with `file://` or `ftp://` is `download_failed`, nothing is read from the local disk,
/// and the job is never submitted again.
#[test]
fn output_urls_with_other_schemes_are_download_failed() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let cases = [
        ("file", "file:///etc/hostname"),
        ("ftp", "ftp://127.0.0.1/x.png"),
        ("data", "data:image/png;base64,iVBORw0KGgo="),
        ("relative", "/files/x.png"),
        ("javascript", "javascript:alert(1)"),
    ];
    let mut pngs = Vec::new();
    for (i, (name, url)) in cases.iter().enumerate() {
        pngs.push(drop_answered(
            &env,
            &fake,
            name,
            9700 + i as u64,
            answer_with_url(url),
        ));
    }
    let files: Vec<String> = cases.iter().map(|(n, _)| format!("{n}.png")).collect();
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    wait_all_ended(&mut d, &refs);
    let mut f = Failures::default();
    for (file, png) in files.iter().zip(&pngs) {
        let end = end_of(&d, file);
        f.check(
            end.as_ref()
                .is_some_and(|e| e["reason"] == "download_failed"),
            || format!("{file}: expected download_failed, got {end:?}"),
        );
        let ups = fake.uploads_of(&sha256(png)).len();
        f.check(ups == 1, || format!("{file}: submitted {ups} times"));
    }
    f.finish(&d, &env);
    let hostname = std::fs::read("/etc/hostname").unwrap_or_default();
    if !hostname.is_empty() {
        for path in walk_paths(&env.quarantine) {
            assert!(
                std::fs::read(&path).map_or(true, |b| b != hostname),
                "{} holds /etc/hostname",
                path.display()
            );
        }
    }
    d.stop();
    assert_nothing_lost(&env);
    assert_key_on_no_disk(&env);
}

/// Issue 4: "endless downloads (cap bytes and time)". An output that trickles forever is cut
/// by `api.request_timeout`, retried, then `download_failed`; one that streams fast forever
/// is cut by the size cap. The daemon stays up and keeps working.
#[test]
fn endless_downloads_are_cut_by_time_and_size() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(
        &env,
        &[
            DEFAULT_PROMPT,
            ("api.request_timeout", "2s"),
            ("retry.max_attempts", "2"),
        ],
    );
    let started = Instant::now();
    drop_answered(
        &env,
        &fake,
        "trickle",
        9800,
        answer_with_url(&fake.trickle_url()),
    );
    drop_answered(
        &env,
        &fake,
        "endless",
        9801,
        answer_with_url(&fake.endless_url()),
    );
    let trickle = d.wait_job_end("trickle.png");
    let endless = d.wait_job_end("endless.png");
    let took = started.elapsed();
    assert_eq!(trickle["reason"], "download_failed", "{trickle}");
    assert_eq!(endless["reason"], "download_failed", "{endless}");
    let said = |e: &Value| e["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        said(&trickle).contains("did not finish within 2s"),
        "{trickle}"
    );
    // A debug build may not reach the 128 MiB cap within 2 s: either bound will do.
    assert!(
        said(&endless).contains("larger than") || said(&endless).contains("did not finish"),
        "{endless}"
    );
    assert!(
        fake.hits("/hostile/trickle") >= 2,
        "the timed-out download was not retried: {} fetch(es)",
        fake.hits("/hostile/trickle")
    );
    assert!(took < Duration::from_secs(25), "took {took:?}");
    env.drop_file("after.txt", "still working");
    env.drop_file("after.png", images::png(20, 20, 9802));
    d.wait_completed("after.png");
    let leftover: Vec<PathBuf> = walk_paths(&env.quarantine)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".part"))
        .collect();
    assert!(leftover.is_empty(), "partial downloads kept: {leftover:?}");
    d.stop();
    assert_nothing_lost(&env);
}

/// Issue 4: "redirects loops". An output URL that redirects to itself ends `download_failed`
/// after a bounded number of fetches.
#[test]
fn a_redirect_loop_is_download_failed() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT, ("retry.max_attempts", "2")]);
    drop_answered(&env, &fake, "loop", 9900, answer_with_url(&fake.loop_url()));
    let end = d.wait_job_end("loop.png");
    assert_eq!(end["reason"], "download_failed", "{end}");
    let hits = fake.hits("/hostile/loop");
    assert!(
        (1..=40).contains(&hits),
        "the loop was fetched {hits} times"
    );
    d.stop();
    assert_nothing_lost(&env);
}

/// Issue 4: "giant JSON". An answer over 8 MiB is `bad_response`, and the daemon stays up.
#[test]
fn a_giant_json_answer_is_bad_response() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT]);
    let filler = "x".repeat(9 * 1024 * 1024);
    let body = json!({"created": "c", "filler": filler, "data": [{
        "url": format!("{}/files/none.png", fake.url()), "is_image_safe": true}]});
    drop_answered(
        &env,
        &fake,
        "giant",
        9950,
        Reply::status(200, &body.to_string()),
    );
    let end = d.wait_job_end("giant.png");
    assert_eq!(end["reason"], "bad_response", "{end}");
    let q = assert_quarantined(&env, "giant.png", "bad_response");
    let size = std::fs::metadata(q.dir.join("error.json")).unwrap().len();
    assert!(size < 64 * 1024, "error.json is {size} bytes");
    env.drop_file("after.txt", "still working");
    env.drop_file("after.png", images::png(20, 20, 9951));
    d.wait_completed("after.png");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, Logs: "The API key never appears in any log line, metadata or error file." Also
/// when the API itself echoes it back: in an error body (kept as `api_error`), in a message,
/// in an output URL that then fails, or inside a successful answer (kept as `response`).
#[test]

fn the_key_never_appears_even_when_the_api_echoes_it() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[DEFAULT_PROMPT, ("retry.max_attempts", "2")]);
    let echo =
        format!(r#"{{"error":"bad request","headers":{{"authorization":"Bearer {API_KEY}"}}}}"#);
    drop_answered(&env, &fake, "echo400", 9960, Reply::status(400, &echo));
    let said = format!(r#"{{"code":1234,"message":"refused for key {API_KEY}"}}"#);
    drop_answered(
        &env,
        &fake,
        "echo-envelope",
        9961,
        Reply::status(200, &said),
    );
    let url = format!("{}/files/missing.png?key={API_KEY}", fake.url());
    drop_answered(&env, &fake, "echo-url", 9962, answer_with_url(&url));
    let mut good = json!({"created": "c", "data": [{
        "url": null, "prompt": format!("p {API_KEY}"), "is_image_safe": false}]});
    good["note"] = json!(format!("echo {API_KEY}"));
    drop_answered(
        &env,
        &fake,
        "echo-unsafe",
        9963,
        Reply::status(200, &good.to_string()),
    );
    for file in [
        "echo400.png",
        "echo-envelope.png",
        "echo-url.png",
        "echo-unsafe.png",
    ] {
        d.wait_job_end(file);
    }
    let mut f = Failures::default();
    for path in walk_paths(env.root()) {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let leaked = bytes
            .windows(API_KEY.len())
            .any(|w| w == API_KEY.as_bytes());
        f.check(!leaked, || {
            format!("the key is written in {}", path.display())
        });
    }
    let lines: Vec<String> = d
        .events()
        .iter()
        .map(Value::to_string)
        .filter(|l| l.contains(API_KEY))
        .collect();
    f.check(lines.is_empty(), || {
        format!(
            "{} log line(s) hold the key, e.g. {:?}",
            lines.len(),
            lines.first()
        )
    });
    f.finish(&d, &env);
    d.stop();
}
