//! A fleet on a real network filesystem: an sshd on loopback (its own host key and authorized
//! key, in the test's temporary folder) exports the test's folders, which are mounted three
//! times with sshfs (FUSE), and three remixd processes run each in its own UTS and PID
//! namespace, so they look like three hosts sharing one inbox over the network. remixd runs as
//! a child of the namespace's init (a shell), not as its pid 1, which would ignore signals it
//! has no handler for; killing the `unshare` process kills the whole "host".
//!
//! These tests need root (namespaces, FUSE mounts, sshd) and openssh-server and sshfs; without
//! them they fail with a line saying what to install.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::asserts::{Kill, assert_pending};
use crate::daemon::{Daemon, command};
use crate::env::{API_KEY, TestEnv, walk_paths};
use crate::fake_api::{FakeApi, Mode};
use crate::many::{
    NAMES, check_takeover, drop_many, published, unfinished, uploads_by_image, wait_published,
};

const SSHD: &str = "/usr/sbin/sshd";

/// Fails, with what to install, when this machine cannot run a fleet.
fn require_tools() {
    let is_root = rustix::process::geteuid().is_root();
    assert!(
        is_root,
        "the fleet tests need root (namespaces, FUSE mounts, sshd): run `cargo test` as root"
    );
    let have = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = [
        (SSHD, "openssh-server"),
        ("ssh-keygen", "openssh-client"),
        ("sshfs", "sshfs"),
        ("unshare", "util-linux"),
        ("umount", "mount"),
    ]
    .into_iter()
    .filter(|(cmd, _)| !have(cmd))
    .map(|(_, package)| package)
    .collect();
    assert!(
        missing.is_empty() && Path::new("/dev/fuse").exists(),
        "the fleet tests need {missing:?} and /dev/fuse: install them with `apt-get install \
         openssh-server sshfs` (.ci/run does)"
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An sshd exporting `env`'s folder, and that folder mounted once per host.
pub struct Fleet {
    dir: tempfile::TempDir,
    sshd: Child,
    /// Where each host sees the test's folder.
    pub mounts: Vec<PathBuf>,
}

impl Fleet {
    /// Starts sshd on a free loopback port and mounts `env.root()` `hosts` times with sshfs
    /// and `options` (`""` for sshfs's defaults).
    pub fn start(env: &TestEnv, hosts: usize, options: &str) -> Self {
        require_tools();
        let dir = tempfile::Builder::new()
            .prefix("remixd-fleet-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let path = d.join(key).display().to_string();
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &path]));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = FakeApi::unused_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n\
             Subsystem sftp internal-sftp\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut fleet = Self {
            dir,
            sshd,
            mounts: Vec::new(),
        };
        for i in 0..hosts {
            fleet.mount(env, i, port, options);
        }
        fleet
    }

    fn mount(&mut self, env: &TestEnv, i: usize, port: u16, options: &str) {
        let mount = self.dir.path().join(format!("host{i}"));
        std::fs::create_dir_all(&mount).unwrap();
        let mut opts = format!(
            "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes",
            self.dir.path().join("client_key").display()
        );
        if !options.is_empty() {
            opts = format!("{opts},{options}");
        }
        run(Command::new("sshfs")
            .arg(format!("root@127.0.0.1:{}", env.root().display()))
            .arg(&mount)
            .args(["-p", &port.to_string(), "-o", &opts]));
        self.mounts.push(mount);
    }

    /// A config for host `i`: `env`'s folders as that host sees them, its own route on the
    /// fake API ([`crate::fake_api::Upload::via`]), and `extra` (the same for every host).
    pub fn config(
        &self,
        env: &TestEnv,
        fake: &FakeApi,
        i: usize,
        extra: &[(&str, &str)],
    ) -> PathBuf {
        let m = &self.mounts[i];
        let on = |name: &str| m.join(name).display().to_string();
        env.config()
            .fake(fake)
            .set("api.base_url", &fake.url_via(NAMES[i]))
            .set_all(&[
                ("inbox", &on("inbox")),
                ("outbox", &on("outbox")),
                ("quarantine", &on("quarantine")),
                ("limits.requests_per_minute", "6000"),
                ("limits.concurrency", "4"),
                ("watch.poll_interval", "300ms"),
            ])
            .set_all(extra)
            .write_to(&self.dir.path().join(format!("config-{i}.yaml")))
    }

    /// Starts remixd as every host, each with its [`Fleet::config`] with `extra`, then waits
    /// until all of them are ready.
    pub fn start_hosts(
        &self,
        env: &TestEnv,
        fake: &FakeApi,
        extra: &[(&str, &str)],
    ) -> Vec<Daemon> {
        let mut ds: Vec<Daemon> = (0..self.mounts.len())
            .map(|i| Self::start_host(env, i, &self.config(env, fake, i, extra)))
            .collect();
        for d in &mut ds {
            d.wait_ready();
        }
        ds
    }

    /// Starts remixd as host `i`: a UTS namespace named `host{i}` and a PID namespace whose
    /// init is a shell with remixd as its child. Killing the returned process (`unshare`)
    /// kills the whole namespace.
    pub fn start_host(env: &TestEnv, i: usize, config: &Path) -> Daemon {
        let config = config.display().to_string();
        let base = command(env.root(), &["run", "-c", &config], Some(API_KEY));
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--uts",
            "--pid",
            "--fork",
            "--kill-child=SIGKILL",
            "sh",
            "-c",
        ])
        .arg("hostname \"$1\"; shift; \"$@\" & wait $!")
        .arg("sh")
        .arg(format!("host{i}"))
        .arg(base.get_program())
        .args(base.get_args())
        .current_dir(env.root())
        .stdin(Stdio::null());
        for (key, value) in base.get_envs() {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        Daemon::spawn(&mut cmd)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for mount in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Stops host `d`'s remixd as systemd would: SIGTERM to remixd itself (the namespace's init
/// passes no signal on), then a clean exit, which ends the namespace.
fn stop_host(d: &mut Daemon) {
    let remixd: Vec<u32> = children(d.pid()).into_iter().flat_map(children).collect();
    assert_eq!(
        remixd.len(),
        1,
        "one remixd under the host's init: {remixd:?}"
    );
    let pid = libc::pid_t::try_from(remixd[0]).unwrap();
    // SAFETY: kill(2) has no memory effects.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill({pid}, SIGTERM)");
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM\n{}", d.dump());
    d.assert_logs_clean();
}

/// Waits up to `timeout` for `pred` over `d`'s events.
fn wait_long(d: &Daemon, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred(&d.events()) {
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}\n{}",
            d.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wall(event: &Value) -> SystemTime {
    humantime::parse_rfc3339_weak(event["timestamp"].as_str().unwrap_or_default())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Issue 9: "drops images, SIGKILLs one host's process with jobs in flight, and checks that
/// every image is uploaded once (except that host's unanswered jobs), is published once, and
/// that the dead host's jobs are taken over after `lease`." On sshfs's default options, so a
/// new file is first seen about 21 s after it lands (its directory listings are cached 20 s).
#[test]
fn fleet_a_killed_hosts_jobs_are_taken_over_after_the_lease() {
    let env = TestEnv::new();
    let fleet = Fleet::start(&env, 3, "");
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(400), Duration::from_millis(1200), 9);
    let lease = Duration::from_secs(5);
    let mut ds = fleet.start_hosts(&env, &fake, &[("lease", "5s")]);
    let rels = drop_many(&env, 0..45);
    wait_long(
        &ds[1],
        "2 unfinished jobs on host1",
        Duration::from_secs(60),
        |e| unfinished(e).len() >= 2,
    );
    let before = Instant::now();
    let killed_at = SystemTime::now();
    ds[1].signal(libc::SIGKILL);
    ds[1].wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let kill = Kill {
        process: NAMES[1].into(),
        before,
        dead: Instant::now(),
    };
    let orphans = unfinished(&ds[1].events());
    let all: Vec<&Daemon> = ds.iter().collect();
    wait_published(&env, rels.len(), Duration::from_secs(120), &all);
    for d in [0, 2] {
        stop_host(&mut ds[d]);
    }
    for (d, name) in ds.iter().zip(NAMES) {
        d.save_log(&format!("fleet-{name}"));
    }
    let events: Vec<Vec<Value>> = ds.iter().map(Daemon::events).collect();
    let uploads = uploads_by_image(&env, &fake, &rels);
    check_takeover(&env, uploads, &events, 1, &kill, &orphans);
    let taken: Vec<Duration> = events
        .iter()
        .flatten()
        .filter(|e| e["event"] == "job.taken_over")
        .map(|e| wall(e).duration_since(killed_at).unwrap_or_default())
        .collect();
    assert!(!taken.is_empty(), "nobody took host1's jobs over");
    // The lease is measured by the file server's clock in whole seconds (SFTP mtimes).
    let first = *taken.iter().min().unwrap();
    assert!(
        first + Duration::from_secs(1) >= lease && first <= lease * 2 + Duration::from_secs(22),
        "host1's jobs were taken over {first:?} after the kill (lease {lease:?})"
    );
    eprintln!(
        "fleet: host1 killed with {} unfinished jobs, taken over {first:?} after the kill",
        orphans.len()
    );
}

/// Images generated at the fake API (uploads answered 200), whoever asked.
fn generated(fake: &FakeApi) -> usize {
    fake.uploads()
        .iter()
        .filter(|u| u.status == 200)
        .map(|u| {
            u.field("num_images")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        })
        .sum()
}

/// Issue 9: "three processes, `daily_image_budget: 20`, 75 images. At most 20 + (images in
/// flight) are generated, nothing is quarantined, and the rest stay pending, unchanged."
/// SPEC.md, Many processes: "The budgets count every process's billable images together".
#[test]
fn fleet_the_daily_budget_holds_for_the_whole_deployment() {
    let env = TestEnv::new();
    let fleet = Fleet::start(&env, 3, "cache=no");
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(100), Duration::from_millis(400), 20);
    let extra = [("limits.daily_image_budget", "20"), ("lease", "3s")];
    let mut ds = fleet.start_hosts(&env, &fake, &extra);
    let rels = drop_many(&env, 0..75);
    for d in &ds {
        wait_long(d, "the budget pause", Duration::from_secs(60), |e| {
            e.iter()
                .any(|e| e["event"] == "api.paused" && e["reason"] == "budget")
        });
    }
    // Whatever was in flight when the budget ran out ends now.
    std::thread::sleep(Duration::from_secs(3));
    let done = published(&env);
    let made = generated(&fake);
    let peak = fake.peak_inflight_images();
    for (d, name) in ds.iter_mut().zip(NAMES) {
        stop_host(d);
        d.save_log(&format!("fleet-budget-{name}"));
    }
    eprintln!(
        "fleet budget: {made} images generated against a budget of 20 (published {done}, \
         peak in flight at the API {peak})"
    );
    assert!(
        made as u64 <= 20 + peak,
        "{made} images generated: more than the budget (20) + the most in flight ({peak})"
    );
    assert!(
        made >= 20,
        "only {made} images generated: the budget was not used"
    );
    assert_eq!(done, made, "every generated image is published");
    assert!(
        walk_paths(&env.quarantine)
            .iter()
            .all(|p| !p.ends_with("error.json")),
        "nothing is quarantined"
    );
    let published_files: Vec<String> = walk_paths(&env.outbox)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let pending: Vec<&String> = rels
        .iter()
        .filter(|r| {
            let name = Path::new(r)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            !published_files.contains(&name)
        })
        .collect();
    assert_eq!(pending.len(), rels.len() - done);
    for rel in pending {
        assert_pending(&env, rel);
    }
    let usage = usage_files(&env);
    let counted: u64 = usage
        .iter()
        .map(|u| u["billable"].as_u64().unwrap_or(0) + u["reserved"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        counted, made as u64,
        "the owners' usage files count every image generated: {usage:?}"
    );
}

/// Every owner's usage file in the work area.
fn usage_files(env: &TestEnv) -> Vec<Value> {
    walk_paths(&env.work_dir().join("owners"))
        .iter()
        .filter(|p| p.ends_with("usage.json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// Issue 9: "three processes with `inflight_images: 6` never have more than 6 images in
/// flight at the API together (the fake API records its peak)". SPEC.md: "every live process
/// takes its share of concurrency, inflight_images and requests_per_minute".
#[test]
fn fleet_three_processes_share_the_accounts_inflight_images() {
    let env = TestEnv::new();
    let fleet = Fleet::start(&env, 3, "cache=no");
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_latency(Duration::from_millis(300), Duration::from_millis(900), 6);
    let extra = [("limits.inflight_images", "6"), ("lease", "3s")];
    let mut ds = fleet.start_hosts(&env, &fake, &extra);
    // Each process takes its share once it has seen the others' leases.
    for d in &ds {
        wait_long(
            d,
            "a share for 3 live processes",
            Duration::from_secs(30),
            |e| {
                e.iter()
                    .any(|e| e["event"] == "api.limits" && e["live_processes"] == 3)
            },
        );
    }
    let rels = drop_many(&env, 0..60);
    let all: Vec<&Daemon> = ds.iter().collect();
    wait_published(&env, rels.len(), Duration::from_secs(120), &all);
    let peak = fake.peak_inflight_images();
    let by_host: Vec<usize> = NAMES
        .iter()
        .map(|n| fake.uploads().iter().filter(|u| u.via == *n).count())
        .collect();
    for (d, name) in ds.iter_mut().zip(NAMES) {
        stop_host(d);
        d.save_log(&format!("fleet-inflight-{name}"));
    }
    eprintln!(
        "fleet in flight: peak {peak} images at the API (limit 6); uploads per host {by_host:?}"
    );
    assert!(
        peak <= 6,
        "{peak} images were in flight at the API at once (limit 6)"
    );
    assert!(
        peak >= 3,
        "the peak ({peak}) shows the hosts did not work at once"
    );
    assert!(
        by_host.iter().all(|n| *n > 0),
        "every host took part: {by_host:?}"
    );
}
