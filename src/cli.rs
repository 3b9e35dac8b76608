//! The command line: `remixd [run] [-c FILE] [--dry-run] [--once]`, `remixd check`,
//! `remixd requeue`, `remixd status`, and the mapping of every outcome to an exit status.
//! The hidden `remixd generate` writes the shell completions and the man page from this same
//! definition, for the package.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{self, Config, Overrides};
use crate::error::DaemonError;
use crate::requeue::{self, RequeueTargets};
use crate::shutdown::Shutdown;
use crate::{check, daemon, logging};

/// remixd: turns a folder into a queue for the Ideogram 3.0 Remix API.
#[derive(Debug, Parser)]
#[command(
    name = "remixd",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default `run` subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run(RunArgs),
    /// Validate the config, folders and key; exit 0 when all is well, 2 otherwise. Never calls the API.
    Check(ConfigArg),
    /// Put quarantined jobs back into the inbox.
    Requeue(RequeueArgs),
    /// Show who serves this inbox, whether the API is paused, the counts and the day's spend.
    /// Reads the shared state only. Exit 0: a live process, API working; 3: paused; 4: no live
    /// process; 2: bad config.
    Status(StatusArgs),
    /// Write a shell completion script or the man page to stdout (for packaging).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// Options of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Where the config is.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What `remixd generate` writes.
#[derive(Debug, Clone, Subcommand)]
pub enum Generate {
    /// The completion script for a shell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page remixd(1), in roff.
    Man,
}

/// Where the config is.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Config file (default: $REMIXD_CONFIG, else /etc/remixd/config.yaml).
    #[allow(clippy::doc_markdown)] // clap shows this text as the option's help
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Options of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Where the config is.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Use the dry-run provider: no network, outputs are copies of the input.
    #[arg(long)]
    pub dry_run: bool,
    /// Process what is in the inbox and work area now, then exit.
    #[arg(long)]
    pub once: bool,
}

/// Options of `requeue`.
#[derive(Debug, Clone, Args)]
pub struct RequeueArgs {
    /// Where the config is.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Requeue every quarantined job.
    #[arg(long, conflicts_with = "dirs")]
    pub all: bool,
    /// Quarantined job folders to requeue.
    #[arg(value_name = "DIR", required_unless_present = "all")]
    pub dirs: Vec<PathBuf>,
}

/// Parses the command line, runs it, and returns the exit status.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            if !matches!(e, DaemonError::CheckFailed(_)) {
                eprintln!("remixd: {}", crate::error::chain(&e));
            }
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, DaemonError> {
    let done = match cli.command {
        None => run(&cli.run),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Check(args)) => check::run(&config::resolve_path(args.config.as_deref())),
        Some(Command::Requeue(args)) => requeue_cmd(&args),
        Some(Command::Generate(what)) => {
            generate(&what, &mut std::io::stdout().lock()).map_err(DaemonError::Stdout)
        }
        Some(Command::Status(args)) => return status_cmd(&args),
    };
    done.map(|()| crate::error::EXIT_OK)
}

fn status_cmd(args: &StatusArgs) -> Result<u8, DaemonError> {
    // Like requeue, status needs no key: it reads files only.
    let config = load(&args.config, Overrides { dry_run: true })?;
    Ok(crate::status::run(&config, args.json))
}

fn generate(what: &Generate, out: &mut dyn Write) -> std::io::Result<()> {
    let command = Cli::command();
    match what {
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut without_hidden(&command), "remixd", out);
            Ok(())
        }
        Generate::Man => {
            let man = clap_mangen::Man::new(command);
            man.render_title(out)?;
            man.render_name_section(out)?;
            man.render_synopsis_section(out)?;
            man.render_description_section(out)?;
            man.render_options_section(out)?;
            write_man_commands(&mut Cli::command(), out)?;
            out.write_all(MAN_EXTRA.as_bytes())?;
            man.render_version_section(out)
        }
    }
}

/// `command` without its hidden subcommands, which `clap_complete` would otherwise offer
/// (clap cannot remove a subcommand, so the top level is rebuilt around the others).
fn without_hidden(command: &clap::Command) -> clap::Command {
    let mut public = clap::Command::new("remixd")
        .version(crate::VERSION)
        .args(command.get_arguments().cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned(),
        );
    if let Some(about) = command.get_about() {
        public = public.about(about.clone());
    }
    public
}

/// One page for all subcommands, each with its full usage, instead of `clap_mangen`'s list of
/// `remixd-run(1)`-style pages that would not exist.
fn write_man_commands(command: &mut clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    command.build();
    writeln!(out, ".SH COMMANDS")?;
    for sub in command.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ").trim();
        writeln!(
            out,
            ".SS \"{}\"\n{}",
            roff_escape(usage),
            roff_escape(&about)
        )?;
        let mut options = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut options)?;
        // Only the option list: the page's preamble and heading are already out.
        for line in String::from_utf8_lossy(&options).lines() {
            if !(line.starts_with(".SH") || line.starts_with(".ie") || line.starts_with(".el")) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

/// Text safe in a roff line: backslashes and hyphen-minus spelled out, no leading dot.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The most runtime workers a daemon starts, whatever `limits.concurrency` says.
const MAX_WORKERS: usize = 64;

/// The man page's sections that clap does not know: exit statuses, files, where to read on.
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
0
A clean run or a clean stop.
.TP
1
A fatal error other than a bad config (the cause is printed on stderr).
.TP
2
A bad config or bad usage (one line on stderr names the key), or problems found by \fBcheck\fR.
.SH FILES
.TP
/etc/remixd/config.yaml
The config used when neither \fB\-c\fR nor \fBREMIXD_CONFIG\fR says otherwise.
.TP
/usr/share/doc/remixd/config.example.yaml
Every config key with its default and a comment.
.TP
/srv/remix/inbox, /srv/remix/outbox, /srv/remix/quarantine
The shared folders of the packaged service (group \fBremix\fR).
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1), /usr/share/doc/remixd/README.md
"#;

fn load(arg: &ConfigArg, overrides: Overrides) -> Result<Config, DaemonError> {
    Ok(config::load(
        &config::resolve_path(arg.config.as_deref()),
        overrides,
    )?)
}

fn run(args: &RunArgs) -> Result<(), DaemonError> {
    let config = load(
        &args.config,
        Overrides {
            dry_run: args.dry_run,
        },
    )?;
    if let Some(key) = &config.api.api_key {
        crate::secrets::register(key.expose());
    }
    apply_umask(config.umask);
    let logging = logging::init(config.logging.format, &config.logging.level)
        .map_err(|e| DaemonError::Logging(e.to_string()))?;
    // A job's file steps (each fsync above all) run on the runtime's workers and hold one
    // while the disk answers. With one worker per core, a 2-core machine had two such steps
    // in flight and everything else waited behind them; one worker per job slot besides one
    // per core keeps the intake loop and the HTTP client going whatever the disk does.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let workers = (cores + crate::inbox::intake_loop::job_slots(&config)).min(MAX_WORKERS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let shutdown = Shutdown::new();
    let reloads = crate::shutdown::listen(&shutdown).map_err(DaemonError::Runtime)?;
    let options = daemon::RunOptions {
        once: args.once,
        overrides: Overrides {
            dry_run: args.dry_run,
        },
        reloads: Some(reloads),
        logging: Some(logging),
    };
    let result = runtime.block_on(daemon::run(config, options, shutdown));
    if let Err(e) = &result {
        tracing::error!(event = "daemon.failed", error = %crate::error::chain(e), "remixd stopped on a fatal error");
    }
    result
}

fn requeue_cmd(args: &RequeueArgs) -> Result<(), DaemonError> {
    // Requeueing only moves files: it needs no API key, so it works for an administrator
    // outside the service's credentials too.
    let config = load(&args.config, Overrides { dry_run: true })?;
    apply_umask(config.umask);
    let targets = if args.all {
        RequeueTargets::All
    } else {
        RequeueTargets::Dirs(args.dirs.clone())
    };
    let report = requeue::requeue(&config, targets)?;
    for dir in &report.requeued {
        println!("requeued {}", dir.display());
    }
    for problem in &report.problems {
        eprintln!("remixd: {problem}");
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(DaemonError::RequeueIncomplete(report.problems.len()))
    }
}

/// Sets the process umask so every file and folder remixd creates gets the configured mode.
fn apply_umask(umask: u32) {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(umask));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_flags_mean_run() {
        let cli = Cli::try_parse_from(["remixd", "-c", "x.yaml", "--once"]).expect("parses");
        assert!(cli.command.is_none());
        assert!(cli.run.once);
        assert_eq!(cli.run.config.config, Some(PathBuf::from("x.yaml")));
    }

    #[test]
    fn generate_is_hidden_from_help() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("requeue"), "{help}");
        assert!(!help.contains("generate"), "{help}");
    }

    #[test]
    fn requeue_needs_all_or_dirs() {
        assert!(Cli::try_parse_from(["remixd", "requeue"]).is_err());
        assert!(Cli::try_parse_from(["remixd", "requeue", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["remixd", "requeue", "--all", "d"]).is_err());
    }
}
