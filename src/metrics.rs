//! Prometheus metrics without a listener: the counters and histograms the pipeline feeds, and
//! the file `metrics.textfile` names, rewritten whole (temp + rename, mode 0644 whatever the
//! umask) at every `logging.stats_interval` and at stop for `node_exporter`'s textfile
//! collector. The exposition format is `prometheus-client`'s; nothing here writes it by hand.
//! What the gauges say (pending, in flight, paused) is handed in by the caller at each write.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::PauseReason;

/// One metric's labels, as name–value pairs.
type Labels = Vec<(&'static str, String)>;

/// The process's metrics. Cheap to update from any job; the registry is encoded only when
/// the file is written.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    images: Counter,
    spend: Counter<f64, std::sync::atomic::AtomicU64>,
    retries: Counter,
    pending: Gauge,
    in_flight: Gauge,
    paused: Family<Labels, Gauge>,
    up: Family<Labels, Gauge>,
    job_seconds: Histogram,
    api_seconds: Histogram,
    download_seconds: Histogram,
}

/// What the gauges say at one write.
#[derive(Debug, Clone)]
pub struct Gauges<'a> {
    /// Files waiting in the inbox.
    pub pending: u64,
    /// Jobs running in this process.
    pub in_flight: u64,
    /// Why submissions are paused, if they are.
    pub paused: Option<PauseReason>,
    /// This process's owner id (`remixd_up`'s `owner` label).
    pub owner: &'a str,
    /// Whether the process is serving (false in the file written at stop).
    pub up: bool,
}

/// Why the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Writing or renaming the file failed.
    #[error("cannot write the metrics file {path} (metrics.textfile): {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered at zero. The unlabelled ones and `remixd_api_paused` show from
    /// the first write; a labelled counter shows its series from their first event.
    #[must_use]
    pub fn new() -> Self {
        let seconds = |start, n| Histogram::new(exponential_buckets(start, 2.0, n));
        let mut m = Self {
            registry: Registry::default(),
            jobs: Family::default(),
            requests: Family::default(),
            images: Counter::default(),
            spend: Counter::default(),
            retries: Counter::default(),
            pending: Gauge::default(),
            in_flight: Gauge::default(),
            paused: Family::default(),
            up: Family::default(),
            job_seconds: seconds(0.5, 14),
            api_seconds: seconds(0.25, 12),
            download_seconds: seconds(0.05, 12),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "remixd_jobs",
            "Jobs ended, by outcome (completed, quarantined) and quarantine reason",
            self.jobs.clone(),
        );
        r.register(
            "remixd_api_requests",
            "Requests sent to the API, by HTTP status (error: no answer)",
            self.requests.clone(),
        );
        r.register(
            "remixd_images",
            "Images received from the API (or made by the dry-run provider)",
            self.images.clone(),
        );
        r.register(
            "remixd_spend_usd",
            "Estimated USD that may have been billed",
            self.spend.clone(),
        );
        r.register(
            "remixd_retries",
            "Requests sent again after a transient failure or a 429",
            self.retries.clone(),
        );
        self.register_levels();
    }

    /// The gauges and histograms (the counters are in [`Metrics::register`]).
    fn register_levels(&mut self) {
        let r = &mut self.registry;
        r.register(
            "remixd_pending",
            "Files waiting in the inbox",
            self.pending.clone(),
        );
        r.register(
            "remixd_in_flight",
            "Jobs running in this process",
            self.in_flight.clone(),
        );
        r.register(
            "remixd_api_paused",
            "1 while submissions are paused for this reason",
            self.paused.clone(),
        );
        r.register(
            "remixd_up",
            "1 while the process serves the inbox, 0 after a clean stop",
            self.up.clone(),
        );
        r.register(
            "remixd_job_duration_seconds",
            "From detection to the outbox or the quarantine",
            self.job_seconds.clone(),
        );
        r.register(
            "remixd_api_latency_seconds",
            "One API request, from sending to its answer",
            self.api_seconds.clone(),
        );
        r.register(
            "remixd_download_seconds",
            "Downloading one job's outputs",
            self.download_seconds.clone(),
        );
    }

    /// A job ended: `reason` is the quarantine reason (`None` when published).
    pub fn job_ended(&self, reason: Option<&str>, duration: Duration) {
        let labels = match reason {
            Some(reason) => vec![("outcome", "quarantined".into()), ("reason", reason.into())],
            None => vec![("outcome", "completed".into()), ("reason", String::new())],
        };
        self.jobs.get_or_create(&labels).inc();
        self.job_seconds.observe(duration.as_secs_f64());
    }

    /// One API request got an answer with `http_status` (`None`: none came) after `latency`.
    pub fn request(&self, http_status: Option<u16>, latency: Duration) {
        let status = http_status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.requests.get_or_create(&vec![("status", status)]).inc();
        self.api_seconds.observe(latency.as_secs_f64());
    }

    /// A request will be sent again.
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// `n` images were received.
    pub fn images(&self, n: u64) {
        self.images.inc_by(n);
    }

    /// A request that may have been billed, at its estimated price.
    pub fn spend(&self, usd: f64) {
        self.spend.inc_by(usd);
    }

    /// A job's outputs took `took` to download.
    pub fn download(&self, took: Duration) {
        self.download_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition format, with the gauges set from `gauges`.
    #[must_use]
    pub fn encode(&self, gauges: &Gauges<'_>) -> String {
        self.pending
            .set(i64::try_from(gauges.pending).unwrap_or(i64::MAX));
        self.in_flight
            .set(i64::try_from(gauges.in_flight).unwrap_or(i64::MAX));
        // Every reason, so `remixd_api_paused` shows each one, 0 when not in force.
        for reason in PauseReason::ALL {
            let on = gauges.up && gauges.paused == Some(reason);
            self.paused
                .get_or_create(&vec![("reason", reason.name().to_owned())])
                .set(i64::from(on));
        }
        // One series per owner: a restarted process has a new owner id, and the old series
        // must not linger at 1 in this process's file.
        self.up.clear();
        self.up
            .get_or_create(&vec![
                ("version", crate::VERSION.to_owned()),
                ("owner", gauges.owner.to_owned()),
            ])
            .set(i64::from(gauges.up));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// Replaces `path` with the metrics: a temporary file in the same folder, mode 0644
    /// (`node_exporter` may run as another user), renamed over it. Not synced: a crash loses
    /// at most one interval of numbers, and the next write replaces them.
    pub fn write(&self, path: &Path, gauges: &Gauges<'_>) -> Result<(), MetricsError> {
        let text = self.encode(gauges);
        write_file(path, text.as_bytes()).map_err(|source| MetricsError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // node_exporter reads only `*.prom`: the hidden temporary is never collected half-written.
    let mut tmp = tempfile::Builder::new()
        .prefix(".remixd-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges(up: bool) -> Gauges<'static> {
        Gauges {
            pending: 3,
            in_flight: 1,
            paused: Some(PauseReason::Balance),
            owner: "01OWNER",
            up,
        }
    }

    #[test]
    fn every_metric_is_there_from_the_start_with_its_labels() {
        let m = Metrics::new();
        m.job_ended(Some("unsafe_content"), Duration::from_secs(2));
        m.request(Some(500), Duration::from_millis(300));
        let text = m.encode(&gauges(true));
        for line in [
            "remixd_jobs_total{outcome=\"quarantined\",reason=\"unsafe_content\"} 1",
            "remixd_api_requests_total{status=\"500\"} 1",
            "remixd_images_total 0",
            "remixd_spend_usd_total 0.0",
            "remixd_retries_total 0",
            "remixd_pending 3",
            "remixd_in_flight 1",
            "remixd_api_paused{reason=\"balance\"} 1",
            "remixd_api_paused{reason=\"unavailable\"} 0",
            "remixd_job_duration_seconds_count 1",
            "remixd_download_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let up = format!(
            "remixd_up{{version=\"{}\",owner=\"01OWNER\"}} 1",
            crate::VERSION
        );
        assert!(text.lines().any(|l| l == up), "{text}");
    }

    #[test]
    fn the_file_written_at_stop_says_down_and_is_world_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("remixd.prom");
        let m = Metrics::new();
        m.write(&path, &gauges(true)).expect("write");
        m.write(&path, &gauges(false)).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("owner=\"01OWNER\"} 0"), "{text}");
        assert!(
            text.contains("remixd_api_paused{reason=\"balance\"} 0"),
            "{text}"
        );
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(left.len(), 1, "no temporary left behind");
    }
}
