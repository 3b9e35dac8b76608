//! The systemd notify protocol, for real: a unix datagram socket stands in for systemd, the
//! daemon gets `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) pointing at it, and the test reads what
//! arrives: READY=1 once watching, STATUS= with the counts on every stats tick, WATCHDOG=1
//! while the loop turns, STOPPING=1 on SIGTERM. `WATCHDOG_PID` stays unset: systemd sets it
//! to the main pid, which is unknown before the spawn, and unset means "this process".

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::daemon::{self, Daemon, TIMEOUT};
use crate::env::{API_KEY, TestEnv};
use crate::fake_api::{FakeApi, Mode, Reply};
use crate::images;

/// One datagram: `KEY=VALUE` lines, as sd_notify(3) sends them.
#[derive(Debug, Clone)]
struct Message {
    fields: Vec<(String, String)>,
}

impl Message {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8(bytes.to_vec()).expect("notify datagrams are UTF-8");
        let fields = text
            .lines()
            .map(|line| {
                let (key, value) = line
                    .split_once('=')
                    .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?} in {text:?}"));
                (key.to_string(), value.to_string())
            })
            .collect();
        Self { fields }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

/// The socket systemd would listen on, and everything received on it.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    received: Vec<Message>,
}

impl NotifySocket {
    fn bind() -> Self {
        // A short path: unix socket paths are limited to about 100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("remixd-sd-")
            .tempdir_in("/tmp")
            .unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        Self {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        }
    }

    /// Reads whatever has arrived.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.received.push(Message::parse(&buf[..n]));
        }
    }

    /// Waits until `pred` holds for the messages received so far; fails after [`TIMEOUT`].
    fn wait_until(&mut self, d: &Daemon, what: &str, pred: impl Fn(&[Message]) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.drain();
            if pred(&self.received) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received: {:#?}\n{}",
                self.received,
                d.dump()
            );
        }
    }

    /// Waits for the first message for which `pred` holds, and returns it.
    fn wait_for(&mut self, d: &Daemon, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        self.wait_until(d, what, |all| all.iter().any(&pred));
        self.received.iter().find(|m| pred(m)).unwrap().clone()
    }

    fn count(&self, key: &str, value: &str) -> usize {
        self.received.iter().filter(|m| m.is(key, value)).count()
    }
}

/// `remixd run` with `NOTIFY_SOCKET` at `socket` and, when given, `WATCHDOG_USEC`.
fn start_notifying(env: &TestEnv, socket: &NotifySocket, watchdog_usec: Option<&str>) -> Daemon {
    let config = env.config_path.to_string_lossy().into_owned();
    let mut cmd = daemon::command(env.root(), &["run", "-c", &config], Some(API_KEY));
    cmd.env("NOTIFY_SOCKET", &socket.path);
    if let Some(usec) = watchdog_usec {
        cmd.env("WATCHDOG_USEC", usec);
    }
    Daemon::spawn(&mut cmd)
}

/// SPEC.md, Signals and systemd: "`Type=notify` (READY=1 once watching, STATUS= with the
/// counts, WATCHDOG=1 while healthy)"; issue 4: STATUS= carries pending, in flight, done,
/// quarantined, paused or not. With `WATCHDOG_USEC=200000` the pings must come at least every
/// 200 ms, or systemd would kill the service.
#[test]
fn notify_socket_gets_ready_status_watchdog_and_stopping() {
    let env = TestEnv::new();
    env.config().set("logging.stats_interval", "200ms").write();
    let mut sd = NotifySocket::bind();
    let mut d = start_notifying(&env, &sd, Some("200000"));

    let ready = sd.wait_for(&d, "READY=1", |m| m.is("READY", "1"));
    let status = ready.get("STATUS").unwrap_or_default();
    assert!(
        status.starts_with("pending 0, in flight 0, completed 0, quarantined 0")
            && status.ends_with("API ok"),
        "READY=1 carries the counts: {status:?}"
    );
    // The log line is written before the datagram is sent.
    d.wait_ready();

    // Watching: an image dropped after READY=1 is taken, and the counts follow it.
    env.drop_file("late.txt", "a fox in the snow");
    env.drop_file("late.png", images::png(20, 20, 951));
    d.wait_completed("late.png");
    let done = sd.wait_for(&d, "STATUS= counting the published job", |m| {
        m.get("STATUS")
            .is_some_and(|s| s.contains("completed 1, quarantined 0"))
    });
    let status = done.get("STATUS").unwrap();
    assert!(
        status.starts_with("pending 0, ") && status.ends_with("API ok"),
        "{status:?}"
    );

    // STATUS= on every stats tick, not only when something changed.
    let statuses_then = sd
        .received
        .iter()
        .filter(|m| m.get("STATUS").is_some())
        .count();
    sd.wait_until(&d, "three more STATUS= updates", |all| {
        all.iter().filter(|m| m.get("STATUS").is_some()).count() >= statuses_then + 3
    });

    // WATCHDOG=1 at half the timeout: five pings take about 500 ms, never near 200 ms apiece.
    let pings_then = sd.count("WATCHDOG", "1");
    let since = Instant::now();
    sd.wait_until(&d, "five more WATCHDOG=1", |all| {
        all.iter().filter(|m| m.is("WATCHDOG", "1")).count() >= pings_then + 5
    });
    let took = since.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "five watchdog pings took {took:?} with WATCHDOG_USEC=200000"
    );

    d.stop();
    sd.drain();
    let stopping = sd
        .received
        .iter()
        .position(|m| m.is("STOPPING", "1"))
        .unwrap_or_else(|| panic!("no STOPPING=1 after SIGTERM: {:#?}", sd.received));
    assert!(
        sd.received[stopping..]
            .iter()
            .all(|m| m.get("WATCHDOG").is_none() && m.get("READY").is_none()),
        "nothing but the stop after STOPPING=1: {:#?}",
        &sd.received[stopping..]
    );
    assert_eq!(
        sd.count("READY", "1"),
        1,
        "READY=1 once: {:#?}",
        sd.received
    );
}

/// Issue 4: STATUS= says whether the API is paused. A refused key pauses submissions; the
/// status line says so (and why) while the job waits. Without `WATCHDOG_USEC` (no
/// `WatchdogSec=`) the daemon sends no pings at all.
#[test]
fn status_says_when_the_api_is_paused_and_no_watchdog_unless_asked() {
    let fake = FakeApi::start(Mode::Kkiai);
    fake.set_default(Reply::status(401, r#"{"message":"invalid api key"}"#));
    let env = TestEnv::new();
    env.config()
        .fake(&fake)
        .set("logging.stats_interval", "200ms")
        .write();
    let mut sd = NotifySocket::bind();
    let mut d = start_notifying(&env, &sd, None);
    sd.wait_for(&d, "READY=1", |m| m.is("READY", "1"));

    env.drop_file("locked.txt", "a prompt");
    env.drop_file("locked.png", images::png(20, 20, 952));
    d.wait_for_event("api.paused", |_| true);
    let paused = sd.wait_for(&d, "STATUS= saying the API is paused", |m| {
        m.get("STATUS")
            .is_some_and(|s| s.ends_with("API paused (unauthorized)"))
    });
    let status = paused.get("STATUS").unwrap();
    assert!(
        status.contains("completed 0, quarantined 0"),
        "the refused key quarantines nothing: {status:?}"
    );

    d.stop();
    sd.drain();
    assert_eq!(
        sd.count("WATCHDOG", "1"),
        0,
        "pings without WATCHDOG_USEC: {:#?}",
        sd.received
    );
    assert!(sd.received.iter().any(|m| m.is("STOPPING", "1")));
    let leaked = sd
        .received
        .iter()
        .flat_map(|m| &m.fields)
        .any(|(_, v)| v.contains(API_KEY));
    assert!(!leaked, "the API key in a notify message");
}

/// The files in `systemd/`, read as an administrator installs them.
struct Shipped {
    unit: String,
    sysusers: String,
    tmpfiles: String,
    config: String,
}

impl Shipped {
    fn read() -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        Self {
            unit: read("remixd.service"),
            sysusers: read("remixd.sysusers"),
            tmpfiles: read("remixd.tmpfiles"),
            config: read("config.yaml"),
        }
    }

    /// Every value of `key` in the unit, comments skipped.
    fn unit_values(&self, key: &str) -> Vec<&str> {
        self.unit
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    }

    /// The fields of each non-comment line of a sysusers or tmpfiles file.
    fn rows(text: &str) -> Vec<Vec<&str>> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect()
    }
}

/// Issue 4: "installing is copying files and one `systemctl enable --now`". The unit, the
/// sysusers and tmpfiles files and the server config must agree: the credential's path, the
/// user and group, the folders (created setgid for the group, writable in the sandbox).
#[test]
fn shipped_unit_sysusers_tmpfiles_and_config_agree() {
    let s = Shipped::read();
    let config: serde_yaml::Value = serde_yaml::from_str(&s.config).unwrap();

    assert_eq!(
        s.unit_values("LoadCredential"),
        ["api_key:/etc/remixd/api_key"]
    );
    assert_eq!(
        config["api"]["api_key_file"].as_str(),
        Some("/run/credentials/remixd.service/api_key"),
        "the config reads the unit's credential"
    );
    assert!(
        s.unit_values("Environment").is_empty(),
        "{:?}",
        s.unit_values("Environment")
    );
    for exec in s.unit_values("ExecStart") {
        assert!(exec.ends_with(" -c /etc/remixd/config.yaml"), "{exec}");
    }

    let (user, group) = (s.unit_values("User"), s.unit_values("Group"));
    assert_eq!(
        (user.as_slice(), group.as_slice()),
        (["remixd"].as_slice(), ["remix"].as_slice())
    );
    let accounts = Shipped::rows(&s.sysusers);
    for wanted in [["g", "remix"], ["u", "remixd"], ["m", "remixd"]] {
        assert!(
            accounts.iter().any(|r| r[..2] == wanted),
            "sysusers has no {wanted:?} line: {accounts:?}"
        );
    }
    assert!(accounts.iter().any(|r| r[..3] == ["m", "remixd", "remix"]));

    let writable = s.unit_values("ReadWritePaths");
    let folders = Shipped::rows(&s.tmpfiles);
    let work_dir = format!("{}/.remixd", config["inbox"].as_str().unwrap());
    for key in ["inbox", "outbox", "quarantine"] {
        let path = config[key].as_str().unwrap();
        assert!(
            writable.iter().any(|w| path.starts_with(&format!("{w}/"))),
            "{key} {path} is outside ReadWritePaths {writable:?}"
        );
    }
    for path in [
        config["inbox"].as_str().unwrap(),
        config["outbox"].as_str().unwrap(),
        config["quarantine"].as_str().unwrap(),
        work_dir.as_str(),
    ] {
        assert!(
            folders
                .iter()
                .any(|r| r[..5] == ["d", path, "2770", "remixd", "remix"]),
            "tmpfiles does not make {path} setgid for remix: {folders:?}"
        );
    }
}

/// The server config the package installs as /etc/remixd/config.yaml passes `remixd check`
/// once its folders and key exist (here in a temporary root).
#[test]
fn shipped_config_passes_check() {
    let s = Shipped::read();
    let env = TestEnv::new();
    let key = env.root().join("api_key");
    std::fs::write(&key, format!("{API_KEY}\n")).unwrap();
    let srv = env.root().join("srv");
    let text = s
        .config
        .replace(
            "/run/credentials/remixd.service/api_key",
            &key.to_string_lossy(),
        )
        .replace("/srv/remix", &srv.to_string_lossy());
    let config = env.root().join("server.yaml");
    std::fs::write(&config, text).unwrap();
    let config = config.to_string_lossy().into_owned();
    let (status, stdout, stderr) = daemon::run_to_end(env.root(), &["check", "-c", &config], None);
    assert_eq!(status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("ok (provider kkiai"), "{stdout}");
}
