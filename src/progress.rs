//! The progress bar of `--once` on a terminal: done/total, quarantined, rate, ETA, and the
//! pause reason while paused, drawn on stderr with `indicatif` only when stderr is a terminal
//! (whatever the log format), so stdout keeps exactly its log lines and a redirected run
//! never sees a control sequence. Log lines bound for the same terminal are printed above
//! the bar ([`TerminalLines`]) rather than through it.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

use crate::api::PauseReason;

/// The bar on screen now, for the log writer to step around.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The bar of one `--once` run.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    ticking: AtomicBool,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Jobs ended (published or quarantined).
    pub done: u64,
    /// Of those, quarantined.
    pub quarantined: u64,
    /// Jobs in all: ended, running and waiting.
    pub total: u64,
    /// Why submissions are paused, if they are.
    pub paused: Option<PauseReason>,
}

impl Progress {
    /// A bar on stderr, or `None` when stderr is not a terminal.
    #[must_use]
    pub fn start() -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let style =
            ProgressStyle::with_template("{bar:30} {pos}/{len} done, {msg}{rate}, ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1}/s", state.per_sec());
                    },
                )
                .progress_chars("=> ");
        let bar =
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(style);
        *ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar.clone());
        Some(Self {
            bar,
            ticking: AtomicBool::new(false),
        })
    }

    /// Shows `now`. The total never shrinks: a job between the inbox and its start, or
    /// just ended, is briefly counted nowhere.
    pub fn update(&self, now: Done) {
        let total = now.total.max(self.bar.length().unwrap_or(0));
        let pause = now
            .paused
            .map_or_else(String::new, |r| format!("PAUSED ({}), ", r.name()));
        self.bar
            .set_message(format!("{} quarantined, {pause}", now.quarantined));
        self.bar.set_length(total);
        self.bar.set_position(now.done);
        // Ticking only from the first real numbers on, so no empty bar is ever drawn; the
        // tick keeps the rate and ETA moving while no job ends (a pause).
        if !self.ticking.swap(true, Ordering::Relaxed) {
            self.bar.enable_steady_tick(Duration::from_millis(500));
        }
    }

    /// Leaves the final state on screen (jobs left unfinished by a stop stay counted as
    /// not done).
    pub fn finish(&self) {
        self.bar.abandon();
        *ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Log lines for stdout when it is a terminal: each line is held until the logger is done
/// with it, then printed with the bar (if any) lifted out of the way.
#[derive(Debug, Clone, Copy, Default)]
pub struct TerminalLines;

/// One log line on its way to a terminal.
#[derive(Debug, Default)]
pub struct Line(Vec<u8>);

impl<'a> MakeWriter<'a> for TerminalLines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line::default()
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let print = || {
            // A closed stdout must not stop the daemon; the line is lost either way.
            let _ = std::io::stdout().lock().write_all(&self.0);
        };
        let bar = ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}
