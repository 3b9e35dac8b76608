//! A full disk (ENOSPC) and a read-only destination: the work waits (logged), nothing is lost
//! or quarantined, and it finishes by itself once space or write access returns. The small
//! filesystems are real tmpfs mounts: the tests need root (or CAP_SYS_ADMIN) and `mount`,
//! and fail saying so where they are missing; CI runs them as root. A tmpfs outbox is also on another
//! filesystem than the work area, so these tests go through the cross-filesystem publish.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::asserts::{assert_all_ended, assert_pending};
use crate::daemon::Daemon;
use crate::env::{TestEnv, walk_paths};
use crate::fake_api::{FakeApi, Mode};
use crate::images;

/// A tmpfs mounted on a folder, unmounted when dropped (before the folder is deleted: declare
/// it after the [`TestEnv`]).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `2m`) on `dir`, or fails the test saying what it needs.
    fn mount(dir: &Path, size: &str) -> Self {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Self {
                dir: dir.to_path_buf(),
            },
            Ok(o) => panic!(
                "this test needs to mount a tmpfs: run it as root (or with CAP_SYS_ADMIN); \
                 mount said: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "this test needs `mount` (util-linux: apt-get install mount) and root to mount \
                 a tmpfs: {e}"
            ),
        }
    }

    /// `mount -o remount,OPTION`: `ro` or `rw`.
    fn remount(&self, option: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount,{option} {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the filesystem of `dir` with `dir/.filler` until ENOSPC, then gives back `leave`
/// bytes. Returns the filler's path.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join(".filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(leave)).unwrap();
    file.sync_all().unwrap();
    path
}

/// The warning remixd logs when a local step fails and the job waits: a `warn` line naming
/// the error (`os_error` is e.g. "No space left on device").
fn local_warning(events: &[Value], os_error: &str) -> Option<Value> {
    events
        .iter()
        .find(|e| {
            e["level"]
                .as_str()
                .is_some_and(|l| l.eq_ignore_ascii_case("warn"))
                && e.to_string().contains(os_error)
        })
        .cloned()
}

fn drop_big(env: &TestEnv, stem: &str, seed: u64) {
    env.drop_file(&format!("{stem}.txt"), "a big one");
    // About 200 KB: more than the space left on the full filesystem.
    env.drop_file(&format!("{stem}.png"), images::png(256, 256, seed));
}

/// While the destination cannot take the job: nothing ended, nothing quarantined, the inputs
/// still pending, and no visible job folder in the outbox (a hidden staging folder may be
/// there mid-attempt).
fn assert_waiting(env: &TestEnv, d: &Daemon, stems: &[&str]) {
    assert!(d.events_named("job.quarantined").is_empty(), "{}", d.dump());
    assert!(d.events_named("job.completed").is_empty(), "{}", d.dump());
    for stem in stems {
        assert_pending(env, &format!("{stem}.png"));
        assert_pending(env, &format!("{stem}.txt"));
    }
    for path in walk_paths(&env.outbox) {
        let rel = path.strip_prefix(&env.outbox).unwrap();
        if crate::asserts::is_gallery_page(rel) {
            continue;
        }
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        assert!(
            top.starts_with('.'),
            "visible {} in the outbox while it cannot take the job\n{}",
            rel.display(),
            env.describe()
        );
    }
}

/// Issue: "A full disk (ENOSPC) ... pauses the work (logged), loses nothing, and resumes when
/// space returns; it never quarantines the file." The outbox is a 2 MiB tmpfs (another
/// filesystem than the work area) filled to 32 KiB short of full; the jobs wait in the work
/// area, then publish once the filler is deleted.
#[test]
fn full_outbox_waits_then_publishes_when_space_returns() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    let _mount = Tmpfs::mount(&env.outbox, "2m");
    let filler = fill(&env.outbox, 32 * 1024);
    env.config().fake(&fake).write();
    let mut d = Daemon::start(&env, &[]);
    drop_big(&env, "big1", 3001);
    drop_big(&env, "big2", 3002);
    d.wait_for("a warning about the full disk", |events| {
        local_warning(events, "No space left on device").is_some()
    });
    // Past a retry of the publish (the wait is retry.max_backoff, 1 s here).
    std::thread::sleep(Duration::from_millis(2500));
    assert_waiting(&env, &d, &["big1", "big2"]);
    // remixd may stop claiming while the disk is full: the second image may not be sent yet.
    assert!(fake.uploads().len() <= 2, "{}", d.dump());

    std::fs::remove_file(&filler).unwrap();
    d.wait_completed("big1.png");
    d.wait_completed("big2.png");
    for rel in ["big1.png", "big2.png"] {
        let sha = crate::env::sha256(env.dropped_at(rel).bytes());
        assert_eq!(
            fake.uploads_of(&sha).len(),
            1,
            "{rel}: waiting for space sent it again\n{}",
            d.dump()
        );
    }
    d.stop();
    assert_all_ended(&env);
}

/// As above with a read-only outbox (`mount -o remount,ro`), then writable again.
#[test]
fn read_only_outbox_waits_then_publishes_when_writable() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    let mount = Tmpfs::mount(&env.outbox, "16m");
    mount.remount("ro");
    env.config().fake(&fake).write();
    let mut d = Daemon::start(&env, &[]);
    drop_big(&env, "ro", 3003);
    d.wait_for("a warning about the read-only outbox", |events| {
        local_warning(events, "Read-only file system").is_some()
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_waiting(&env, &d, &["ro"]);

    mount.remount("rw");
    d.wait_completed("ro.png");
    assert_eq!(fake.uploads().len(), 1, "waiting sent nothing again");
    d.stop();
    assert_all_ended(&env);
}

/// The whole installation (inbox, work area, outbox, quarantine) on one 4 MiB tmpfs, filled
/// to the brim as the images arrive: claiming, journaling and downloading all hit
/// ENOSPC. Nothing may be quarantined or lost; everything completes once space returns.
#[test]
fn full_disk_everywhere_loses_nothing_and_recovers() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    let _mount = Tmpfs::mount(env.root(), "4m");
    for dir in [&env.inbox, &env.outbox, &env.quarantine] {
        std::fs::create_dir_all(dir).unwrap();
    }
    env.config()
        .fake(&fake)
        .set("defaults.num_images", "2")
        .write();
    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    drop_big(&env, "full1", 3004);
    drop_big(&env, "full2", 3005);
    // Within watch.settle (200 ms): before remixd takes the images.
    let filler = fill(env.root(), 0);
    d.wait_for("a warning about the full disk", |events| {
        local_warning(events, "No space left on device").is_some()
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_waiting(&env, &d, &["full1", "full2"]);

    std::fs::remove_file(&filler).unwrap();
    d.wait_completed("full1.png");
    d.wait_completed("full2.png");
    d.stop();
    assert_all_ended(&env);
    for rel in ["full1.png", "full2.png"] {
        let sha = crate::env::sha256(env.dropped_at(rel).bytes());
        assert!(
            fake.uploads_of(&sha).len() <= 1,
            "{rel} was sent more than once\n{}",
            d.dump()
        );
    }
}

/// The disk fills while the requests are at the API: the answers arrive but cannot be
/// journaled or downloaded. The jobs must wait and finish when space returns without being
/// paid for again (SPEC.md: "Nothing is ever ... duplicated"; issue: "loses nothing").
#[test]
fn full_disk_while_the_api_answers_does_not_pay_twice() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_default(crate::fake_api::Reply::ok().delayed(Duration::from_millis(1500)));
    let env = TestEnv::new();
    let _mount = Tmpfs::mount(env.root(), "4m");
    for dir in [&env.inbox, &env.outbox, &env.quarantine] {
        std::fs::create_dir_all(dir).unwrap();
    }
    env.config()
        .fake(&fake)
        .set("defaults.num_images", "2")
        .write();
    let mut d = Daemon::start(&env, &[]);
    d.wait_ready();
    drop_big(&env, "late1", 3006);
    drop_big(&env, "late2", 3007);
    d.wait_for("both submitted", |events| {
        events
            .iter()
            .filter(|e| e["event"] == "job.submitted")
            .count()
            >= 2
    });
    let filler = fill(env.root(), 0);
    d.wait_for("a warning about the full disk", |events| {
        local_warning(events, "No space left on device").is_some()
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_waiting(&env, &d, &["late1", "late2"]);

    std::fs::remove_file(&filler).unwrap();
    d.wait_completed("late1.png");
    d.wait_completed("late2.png");
    d.stop();
    assert_all_ended(&env);
    for rel in ["late1.png", "late2.png"] {
        let sha = crate::env::sha256(env.dropped_at(rel).bytes());
        let sent = fake.uploads_of(&sha).len();
        assert_eq!(
            sent,
            1,
            "{rel} was sent {sent} times: its answer came while the disk was full\n{}",
            d.dump()
        );
    }
}
