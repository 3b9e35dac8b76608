//! The real `remixd` binary as a child process: its stdout read line by line into JSON log
//! events (a line that is not a JSON object is a failure), its stderr kept, `wait_for` with
//! one global timeout that prints the logs when it runs out, real signals, and exit status.
//! The child is killed when the handle is dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::env::{API_KEY, TestEnv};
use crate::fake_api::{FakeApi, Mode};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test: `$REMIXD_TEST_BIN` when set (a private copy, safe from other
/// builds sharing the target folder), else the one cargo built for this test run.
pub fn bin() -> String {
    std::env::var("REMIXD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_remixd").to_string())
}

#[derive(Default)]
struct Output {
    events: Vec<Value>,
    raw: Vec<String>,
    not_json: Vec<String>,
}

/// A running (or finished) `remixd`.
pub struct Daemon {
    child: Child,
    out: Arc<Mutex<Output>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// A `remixd` command with a clean environment: no `REMIXD_CONFIG`, no `RUST_LOG`, no
/// systemd notify variables (a test run under systemd must not notify its own service), and
/// the test key in `REMIXD_API_KEY` unless `key` is `None`.
pub fn command(cwd: &Path, args: &[&str], key: Option<&str>) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("REMIXD_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("REMIXD_API_KEY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    if let Some(key) = key {
        cmd.env("REMIXD_API_KEY", key);
    }
    cmd
}

impl Daemon {
    /// `remixd run -c CONFIG EXTRA...` with the test key.
    pub fn start(env: &TestEnv, extra: &[&str]) -> Self {
        Self::start_with_key(env, extra, Some(API_KEY))
    }

    /// As [`Daemon::start`], choosing the key (`None`: no `REMIXD_API_KEY` at all).
    pub fn start_with_key(env: &TestEnv, extra: &[&str], key: Option<&str>) -> Self {
        let config = env.config_path.to_string_lossy().into_owned();
        let mut args = vec!["run", "-c", config.as_str()];
        args.extend_from_slice(extra);
        let mut cmd = command(env.root(), &args, key);
        Self::spawn(&mut cmd)
    }

    /// `remixd run -c CONFIG EXTRA...` with the test key and another config than the
    /// environment's (for several processes with different settings).
    pub fn start_config(env: &TestEnv, config: &Path, extra: &[&str]) -> Self {
        let config = config.to_string_lossy().into_owned();
        let mut args = vec!["run", "-c", config.as_str()];
        args.extend_from_slice(extra);
        let mut cmd = command(env.root(), &args, Some(API_KEY));
        Self::spawn(&mut cmd)
    }

    /// Spawns `cmd` with stdout and stderr captured.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program()));
        let out = Arc::new(Mutex::new(Output::default()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout_pipe = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let out2 = Arc::clone(&out);
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines() {
                let Ok(line) = line else { break };
                let mut out = out2.lock().unwrap();
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => out.events.push(v),
                    _ => out.not_json.push(line.clone()),
                }
                out.raw.push(line);
            }
        });
        let err2 = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut pipe = stderr_pipe;
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err2
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Self {
            child,
            out,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
            status: None,
        }
    }

    /// Every log event so far.
    pub fn events(&self) -> Vec<Value> {
        self.out.lock().unwrap().events.clone()
    }

    /// Events named `name` so far.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Writes every stdout line to `path` when `$REMIXD_IT_LOG_DIR` is set (for a post-mortem
    /// of a multi-process test), as `$REMIXD_IT_LOG_DIR/NAME.log`.
    pub fn save_log(&self, name: &str) {
        let Ok(dir) = std::env::var("REMIXD_IT_LOG_DIR") else {
            return;
        };
        let text = self.out.lock().unwrap().raw.join("\n");
        std::fs::write(Path::new(&dir).join(format!("{name}.log")), text).unwrap();
    }

    /// Raw stdout lines and stderr, for failure messages.
    pub fn dump(&self) -> String {
        let out = self.out.lock().unwrap();
        let tail: Vec<&String> = out.raw.iter().rev().take(300).collect();
        let mut text = String::from("---- remixd stdout (last 300 lines) ----\n");
        for line in tail.into_iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("---- remixd stderr ----\n");
        text.push_str(&self.stderr());
        text
    }

    /// Waits until `pred` holds for the events so far; fails after [`TIMEOUT`] or when the
    /// process has exited without it holding.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if pred(&self.out.lock().unwrap().events) {
                return;
            }
            if self.status.is_none() {
                self.status = self.child.try_wait().unwrap();
            }
            if self.status.is_some() {
                self.join_readers();
                if pred(&self.out.lock().unwrap().events) {
                    return;
                }
                panic!(
                    "remixd exited ({:?}) before: {what}\n{}",
                    self.status,
                    self.dump()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {TIMEOUT:?} waiting for: {what}\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first event named `name` for which `pred` holds, and returns it.
    pub fn wait_for_event(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let matches = |e: &Value| e["event"] == name && pred(e);
        self.wait_for(&format!("event {name}"), |events| {
            events.iter().any(matches)
        });
        self.events().into_iter().find(|e| matches(e)).unwrap()
    }

    /// Waits for `daemon.ready`.
    pub fn wait_ready(&mut self) -> Value {
        self.wait_for_event("daemon.ready", |_| true)
    }

    /// Waits for the job of `file` (relative to the inbox) to end and returns its
    /// `job.completed` or `job.quarantined` event, whichever came first.
    pub fn wait_job_end(&mut self, file: &str) -> Value {
        let ends = |e: &Value| {
            (e["event"] == "job.completed" || e["event"] == "job.quarantined") && e["file"] == file
        };
        self.wait_for(&format!("the job of {file} to end"), |events| {
            events.iter().any(ends)
        });
        self.events().into_iter().find(|e| ends(e)).unwrap()
    }

    /// Waits for `file`'s job to be published; fails at once if it was quarantined.
    pub fn wait_completed(&mut self, file: &str) -> Value {
        let end = self.wait_job_end(file);
        assert_eq!(
            end["event"],
            "job.completed",
            "{file} was expected in the outbox, got {end}\n{}",
            self.dump()
        );
        end
    }

    /// Waits for `file`'s job to be quarantined with `reason`; fails at once on another end.
    pub fn wait_quarantined(&mut self, file: &str, reason: &str) -> Value {
        let end = self.wait_job_end(file);
        assert!(
            end["event"] == "job.quarantined" && end["reason"] == reason,
            "{file} was expected in the quarantine for {reason}, got {end}\n{}",
            self.dump()
        );
        end
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGTERM`, ...).
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with our own child's pid has no memory effects.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits for the process to exit, at most `timeout`; all output is read afterwards.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
            if self.status.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "remixd did not exit within {timeout:?}\n{}",
                    self.dump()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.join_readers();
        self.status.unwrap()
    }

    /// SIGTERM, then a clean exit (status 0) within 15 s and clean logs.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(15));
        assert_eq!(
            status.code(),
            Some(0),
            "exit after SIGTERM\n{}",
            self.dump()
        );
        self.assert_logs_clean();
    }

    /// Every stdout line was a JSON object, and the API key appears nowhere in the output.
    /// SPEC.md, Logs: "One JSON object per line on stdout"; "The API key never appears in any
    /// log line".
    pub fn assert_logs_clean(&self) {
        let out = self.out.lock().unwrap();
        assert!(
            out.not_json.is_empty(),
            "stdout lines that are not JSON objects: {:#?}",
            out.not_json
        );
        let leaked = out.raw.iter().any(|l| l.contains(API_KEY)) || self.stderr().contains(API_KEY);
        assert!(
            !leaked,
            "the API key appears in the output\n{}",
            self.dump()
        );
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `remixd ARGS` to completion (for `--help`, `check`, bad configs) with the test key.
pub fn run_to_end(cwd: &Path, args: &[&str], key: Option<&str>) -> (ExitStatus, String, String) {
    let mut cmd = command(cwd, args, key);
    let mut daemon = Daemon::spawn(&mut cmd);
    let status = daemon.wait_exit(TIMEOUT);
    let stdout = daemon.out.lock().unwrap().raw.join("\n");
    (status, stdout, daemon.stderr())
}

/// The events in `events` for `file`, in order, by name.
pub fn job_event_names(events: &[Value], file: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["file"] == file)
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect()
}

/// The usual start: a fake Ideogram API on loopback, `env`'s config pointing at it with the
/// `extra` keys set (in order), and the daemon started and ready.
pub fn start_with_fake(env: &TestEnv, extra: &[(&str, &str)]) -> (FakeApi, Daemon) {
    let fake = FakeApi::start(Mode::Kkiai);
    env.config().fake(&fake).set_all(extra).write();
    let mut d = Daemon::start(env, &[]);
    d.wait_ready();
    (fake, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_reads_json_lines_and_flags_others() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo '{"event":"a","file":"x.png"}'; echo 'plain text'; echo oops >&2; sleep 0.2; echo '{"event":"b"}'"#,
        ]);
        let mut d = Daemon::spawn(&mut cmd);
        let b = d.wait_for_event("b", |_| true);
        assert_eq!(b["event"], "b");
        assert_eq!(d.wait_exit(TIMEOUT).code(), Some(0));
        assert_eq!(job_event_names(&d.events(), "x.png"), ["a"]);
        assert!(d.stderr().contains("oops"));
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.assert_logs_clean()));
        assert!(caught.is_err(), "a non-JSON line must fail the test");
    }
}
