//! The download stage: every output of a recorded answer fetched (`run`), each one streamed
//! to a temporary file in the job folder, checked (HTTP status, length, image magic), then
//! renamed to `STEM-{operation}-N.EXT` with EXT from the bytes ([`fetch`]). A transient failure is
//! tried again with backoff; one that will not get better is the job's verdict; a local one
//! (disk full) is the stage machine's to wait out. Outputs kept by an earlier run are reused.
//!
//! The URLs come from the API's answer, so they are not trusted: only http(s), and, while
//! `api.base_url` is public, only public addresses ([`crate::api::public_only`]).

use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::Url;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::warn;

use super::ctx::{Ctx, Job};
use super::submit::backoff;
use crate::api::Answer;
use crate::api::client::error_chain;
use crate::api::public_only::{self, NotPublic};
use crate::config::RetryConfig;
use crate::fsx::{Context, FsError};
use crate::image_info::{ImageFormat, SNIFF_LEN, sniff};
use crate::job::describe::hash_file;
use crate::job::verdict::{Reason, Verdict};

/// One output kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Downloaded {
    /// File name inside the job's files folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Format from the bytes.
    pub format: ImageFormat,
}

/// Why an output could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Worth another try (connection, timeout, 5xx, 429, cut short).
    #[error("{0}")]
    Transient(String),
    /// Will not get better (404/410/403, not an image, too large, bad URL).
    #[error("{0}")]
    Permanent(String),
    /// Writing it failed: never the file's fault (the error keeps the errno, so a full or
    /// read-only disk pauses claiming).
    #[error(transparent)]
    Local(FsError),
}

/// Largest output accepted from a download URL.
pub const MAX_OUTPUT_BYTES: u64 = 128 * 1024 * 1024;

/// Limits for one download.
#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    /// Whole-download timeout.
    pub timeout: Duration,
    /// Largest output accepted.
    pub max_bytes: u64,
    /// Whether the output may be on a private, loopback, link-local or unspecified address:
    /// only when `api.base_url` is on one itself (see [`public_only::private_allowed`]).
    pub allow_private: bool,
}

fn refused_address(url: &str, refusal: &NotPublic) -> DownloadError {
    DownloadError::Permanent(format!(
        "the output at {url} was not fetched: {refusal}. remixd fetches outputs only from \
         public addresses while api.base_url is public; check api.base_url"
    ))
}

/// Fetches every output of `answer` not already kept, in the API's order. `Ok(Err)` is a
/// verdict for the job.
pub(super) async fn run(
    ctx: &Ctx,
    job: &mut Job,
    answer: &Answer,
) -> Result<Result<Vec<Option<Downloaded>>, Verdict>, FsError> {
    let files = job.dir.files();
    let stem = format!("{}-{}", job.rec.source.stem(), job.rec.operation());
    let retry = &job.config.retry;
    let limits = DownloadLimits {
        timeout: job.config.api.request_timeout,
        max_bytes: MAX_OUTPUT_BYTES,
        allow_private: public_only::private_allowed(job.config.api.base_url.as_deref()),
    };
    let started = Instant::now();
    let mut kept = Vec::new();
    let mut failed = None;
    for (i, item) in answer.items.iter().enumerate() {
        let n = i + 1;
        if let Some(done) = existing(&files, &stem, n) {
            kept.push(Some(done));
            continue;
        }
        let Some(url) = item.url.as_deref().filter(|_| item.is_image_safe) else {
            kept.push(None);
            continue;
        };
        if let Some(why) = links_expired(url, job.rec.timings.responded_at, SystemTime::now()) {
            return Ok(Err(Verdict::file(
                Reason::DownloadFailed,
                format!(
                    "output {n} was not downloaded: the API's links expired ({why}); the outputs \
                     already fetched are kept here. Requeue the job to submit it again (this \
                     pays for a new remix)"
                ),
            )));
        }
        match fetch_with_retry(ctx, retry, url, &files, &stem, n, limits).await? {
            Ok(done) => kept.push(Some(done)),
            Err(message) => {
                failed = Some(Verdict::file(
                    Reason::DownloadFailed,
                    format!(
                        "output {n} could not be downloaded: {message}; the outputs already fetched are kept here. Requeue the job to submit it again (this pays for a new remix)"
                    ),
                ));
                break;
            }
        }
    }
    let took = started.elapsed();
    job.rec.timings.download_ms += took.as_millis() as u64;
    ctx.metrics.download(took);
    Ok(failed.map_or(Ok(kept), Err))
}

/// How long the API's links live when the URL does not say.
pub const LINK_LIFE: Duration = Duration::from_secs(24 * 3600);

/// Why the link `url`, answered at `responded_at`, is dead at `now`: past its `exp` query
/// parameter (Unix seconds) when it has one, else older than [`LINK_LIFE`].
#[must_use]
pub fn links_expired(
    url: &str,
    responded_at: Option<SystemTime>,
    now: SystemTime,
) -> Option<String> {
    let exp = Url::parse(url).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "exp")
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    });
    if let Some(exp) = exp {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(exp);
        return (now > at)
            .then(|| format!("the link's exp passed at {}", crate::clock::rfc3339(at)));
    }
    let age = now.duration_since(responded_at?).ok()?;
    (age > LINK_LIFE).then(|| {
        format!(
            "the answer is {} old and links live 24 h",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        )
    })
}

/// Fetches one output, trying a transient failure again; `Ok(Err)` says why it could not be.
async fn fetch_with_retry(
    ctx: &Ctx,
    retry: &RetryConfig,
    url: &str,
    files: &Path,
    stem: &str,
    n: usize,
    limits: DownloadLimits,
) -> Result<Result<Downloaded, String>, FsError> {
    let mut failures = 0;
    loop {
        match fetch(ctx.api.http(), url, files, stem, n, limits).await {
            Ok(done) => return Ok(Ok(done)),
            Err(DownloadError::Permanent(m)) => return Ok(Err(m)),
            Err(DownloadError::Local(e)) => return Err(e),
            Err(DownloadError::Transient(m)) => {
                failures += 1;
                if failures >= retry.max_attempts {
                    return Ok(Err(format!("{m} ({failures} tries)")));
                }
                let delay = backoff(retry, failures);
                warn!(output = n, delay_ms = delay.as_millis() as u64, error = %m, "a download failed; trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Fetches `url` into `dir` as `{stem}-{n}.{ext}`, `stem` being `STEM-{operation}`.
///
/// # Errors
/// A [`DownloadError`] saying whether to retry. Nothing is left behind on failure.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    dir: &Path,
    stem: &str,
    n: usize,
    limits: DownloadLimits,
) -> Result<Downloaded, DownloadError> {
    let part = dir.join(format!(".{stem}-{n}.part"));
    let result = match fetch_into(http, url, &part, limits).await {
        Ok(kept) => {
            keep(
                &part,
                dir,
                format!("{stem}-{n}.{}", kept.format.ext()),
                kept,
            )
            .await
        }
        Err(err) => Err(err),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}

/// Renames a checked `.part` file to its final name, durably.
async fn keep(
    part: &Path,
    dir: &Path,
    file: String,
    kept: Kept,
) -> Result<Downloaded, DownloadError> {
    let target = dir.join(&file);
    let (from, to) = (part.to_path_buf(), target.clone());
    // Not synced here: the folder is synced when metadata.json (or error.json) is written
    // into it, before the journal moves on; until then recovery fetches what is missing.
    match tokio::task::spawn_blocking(move || std::fs::rename(&from, &to)).await {
        Ok(Ok(())) => Ok(Downloaded {
            file,
            bytes: kept.bytes,
            sha256: kept.sha256,
            format: kept.format,
        }),
        Ok(Err(e)) => Err(e)
            .context("keeping the output as", &target)
            .map_err(DownloadError::Local),
        Err(e) => Err(std::io::Error::other(e))
            .context("keeping the output as", &target)
            .map_err(DownloadError::Local),
    }
}

/// An output written to its `.part` file and checked, not yet renamed.
struct Kept {
    bytes: u64,
    sha256: String,
    format: ImageFormat,
}

async fn fetch_into(
    http: &reqwest::Client,
    url: &str,
    part: &Path,
    limits: DownloadLimits,
) -> Result<Kept, DownloadError> {
    let parsed = Url::parse(url).map_err(|_| {
        DownloadError::Permanent(format!("the API gave a URL that is not one: {url}"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DownloadError::Permanent(format!(
            "the API gave a non-http URL: {url}"
        )));
    }
    let client = if limits.allow_private {
        http
    } else {
        if let Some(refusal) = public_only::literal_refusal(&parsed, "its host is") {
            return Err(refused_address(url, &refusal));
        }
        public_only::client().map_err(|e| {
            DownloadError::Transient(format!(
                "could not set up the HTTP client for downloads: {}",
                error_chain(&e)
            ))
        })?
    };
    let response = client
        .get(parsed)
        .timeout(limits.timeout)
        .send()
        .await
        .map_err(|e| network_error(url, limits, &e))?;
    check_status(url, response.status().as_u16())?;
    let declared = response.content_length();
    if declared.is_some_and(|len| len > limits.max_bytes) {
        return Err(too_large(url, limits));
    }
    let kept = stream_to(response, url, part, limits).await?;
    if declared.is_some_and(|len| len != kept.bytes) {
        return Err(DownloadError::Transient(format!(
            "the output at {url} was cut short ({} of {} bytes)",
            kept.bytes,
            declared.unwrap_or_default()
        )));
    }
    Ok(kept)
}

fn check_status(url: &str, status: u16) -> Result<(), DownloadError> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(DownloadError::Transient(format!(
            "fetching the output at {url} failed with HTTP {status}"
        ))),
        401 | 403 | 404 | 410 => Err(DownloadError::Permanent(format!(
            "the output at {url} is gone or refused (HTTP {status}); the API's links last 24 \
             hours"
        ))),
        _ => Err(DownloadError::Permanent(format!(
            "fetching the output at {url} failed with HTTP {status}"
        ))),
    }
}

/// Streams the body to `part`, hashing as it goes; checks size and image magic.
async fn stream_to(
    mut response: reqwest::Response,
    url: &str,
    part: &Path,
    limits: DownloadLimits,
) -> Result<Kept, DownloadError> {
    let action = "writing the output";
    let mut out = tokio::fs::File::create(part)
        .await
        .context(action, part)
        .map_err(DownloadError::Local)?;
    let mut hash = Sha256::new();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    let mut bytes: u64 = 0;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| network_error(url, limits, &e))?
    {
        bytes += chunk.len() as u64;
        if bytes > limits.max_bytes {
            return Err(too_large(url, limits));
        }
        let room = SNIFF_LEN.saturating_sub(head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..room]);
        hash.update(&chunk);
        out.write_all(&chunk)
            .await
            .context(action, part)
            .map_err(DownloadError::Local)?;
    }
    out.flush()
        .await
        .context(action, part)
        .map_err(DownloadError::Local)?;
    out.sync_all()
        .await
        .context(action, part)
        .map_err(DownloadError::Local)?;
    let format = sniff(&head).ok_or_else(|| {
        DownloadError::Permanent(format!(
            "the output at {url} is not a PNG, JPEG or WebP image"
        ))
    })?;
    Ok(Kept {
        bytes,
        sha256: hex::encode(hash.finalize()),
        format,
    })
}

fn network_error(url: &str, limits: DownloadLimits, err: &reqwest::Error) -> DownloadError {
    if let Some(refusal) = public_only::find_refusal(err) {
        refused_address(url, &refusal)
    } else if err.is_timeout() {
        DownloadError::Transient(format!(
            "fetching the output at {url} did not finish within {}",
            humantime::format_duration(limits.timeout)
        ))
    } else if err.is_body() || err.is_decode() {
        DownloadError::Transient(format!(
            "the output at {url} was cut short: {}",
            error_chain(err)
        ))
    } else {
        DownloadError::Transient(format!(
            "could not fetch the output at {url}: {}",
            error_chain(err)
        ))
    }
}

fn too_large(url: &str, limits: DownloadLimits) -> DownloadError {
    DownloadError::Permanent(format!(
        "the output at {url} is larger than {} bytes, more than any image the API makes",
        limits.max_bytes
    ))
}

/// An output already fetched by an earlier run (`{stem}-{n}.*` with image bytes), re-hashed.
#[must_use]
pub fn existing(dir: &Path, stem: &str, n: usize) -> Option<Downloaded> {
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp]
        .into_iter()
        .find_map(|format| {
            let file = format!("{stem}-{n}.{}", format.ext());
            let hashed = hash_file(&dir.join(&file)).filter(|h| h.format == Some(format))?;
            Some(Downloaded {
                file,
                bytes: hashed.bytes,
                sha256: hashed.sha256,
                format,
            })
        })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::routing::get;
    use reqwest::redirect::Policy;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn links_expire_by_their_exp_or_after_24_hours() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_756_000_000);
        let hour = Duration::from_secs(3600);
        let plain = "https://x/a.png";
        let with_exp = "https://x/a.png?sig=1&exp=1756003600";
        assert_eq!(links_expired(plain, Some(t0), t0 + 23 * hour), None);
        let old = links_expired(plain, Some(t0), t0 + 25 * hour).expect("expired");
        assert!(old.contains("24 h"), "{old}");
        assert_eq!(
            links_expired(plain, None, t0 + 1000 * hour),
            None,
            "age unknown"
        );
        assert_eq!(links_expired(with_exp, Some(t0), t0 + hour / 2), None);
        let past = links_expired(with_exp, Some(t0), t0 + 2 * hour).expect("past exp");
        assert!(past.contains("exp"), "{past}");
        assert!(
            links_expired(with_exp, Some(t0 - 30 * hour), t0 + hour / 2).is_none(),
            "exp wins over the 24 h rule"
        );
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR some more png bytes";

    /// A loopback server with one route per case; returns its base URL.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let to_loopback = format!("http://{addr}/good");
        let app = axum::Router::new()
            .route("/good", get(|| async { PNG }))
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
            .route("/html", get(|| async { "<html>not an image</html>" }))
            .route("/gone", get(|| async { StatusCode::GONE }))
            .route("/busy", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
            .route("/big", get(|| async { vec![0x89u8; 4096] }))
            .route("/bigstream", get(|| async { unsized_body(4096) }))
            .route(
                "/to-loopback",
                get(move || async move { redirect(to_loopback) }),
            )
            .route(
                "/to-file",
                get(|| async { redirect("file:///etc/passwd".into()) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn redirect(to: String) -> impl axum::response::IntoResponse {
        (StatusCode::FOUND, [("location", to)])
    }

    /// A body sent in chunks with no `Content-Length`, so only the running count can stop it.
    fn unsized_body(len: usize) -> axum::body::Body {
        let chunks = std::iter::repeat_n(vec![0x89u8; 256], len / 256).map(Ok::<_, std::io::Error>);
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    }

    /// A raw server that promises `declared` bytes, sends `sent`, and hangs up.
    async fn serve_short(declared: usize, sent: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(sent).await;
        });
        format!("http://{addr}/short")
    }

    const LIMITS: DownloadLimits = DownloadLimits {
        timeout: Duration::from_secs(10),
        max_bytes: 1024,
        allow_private: true,
    };

    async fn get_into(url: &str, dir: &Path) -> Result<Downloaded, DownloadError> {
        fetch(&reqwest::Client::new(), url, dir, "cat-remix", 2, LIMITS).await
    }

    /// The folder holds exactly `names` (no `.part` left over).
    fn assert_files(dir: &Path, names: &[&str]) {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        found.sort_unstable();
        assert_eq!(found, names);
    }

    #[tokio::test]
    async fn keeps_a_good_png_under_its_final_name() {
        let base = serve().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let got = get_into(&format!("{base}/good"), dir.path())
            .await
            .expect("fetched");
        assert_eq!(got.file, "cat-remix-2.png");
        assert_eq!(got.format, ImageFormat::Png);
        assert_eq!(got.bytes, PNG.len() as u64);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(PNG)));
        assert_eq!(
            std::fs::read(dir.path().join(&got.file)).expect("read"),
            PNG
        );
        assert_files(dir.path(), &["cat-remix-2.png"]);
        assert_eq!(existing(dir.path(), "cat-remix", 2), Some(got));
    }

    #[tokio::test]
    async fn each_failure_says_whether_to_retry_and_leaves_nothing() {
        let base = serve().await;
        let short = serve_short(500, PNG).await;
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}/x", l.local_addr().expect("addr"))
        };
        let cases = [
            (format!("{base}/missing"), "permanent", "HTTP 404"),
            (format!("{base}/boom"), "transient", "HTTP 500"),
            (
                format!("{base}/html"),
                "permanent",
                "not a PNG, JPEG or WebP",
            ),
            (format!("{base}/gone"), "permanent", "HTTP 410"),
            (format!("{base}/busy"), "transient", "HTTP 429"),
            (format!("{base}/big"), "permanent", "larger than 1024 bytes"),
            (
                format!("{base}/bigstream"),
                "permanent",
                "larger than 1024 bytes",
            ),
            (short, "transient", "cut short"),
            (refused, "transient", "could not fetch"),
            ("ftp://x/a.png".to_owned(), "permanent", "non-http URL"),
            ("not a url".to_owned(), "permanent", "not one"),
        ];
        for (url, want, words) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let err = get_into(&url, dir.path()).await.expect_err(&url);
            let kind = match &err {
                DownloadError::Transient(_) => "transient",
                DownloadError::Permanent(_) => "permanent",
                DownloadError::Local(..) => "local",
            };
            assert_eq!(kind, want, "{url}: {err}");
            assert!(err.to_string().contains(words), "{url}: {err}");
            assert_files(dir.path(), &[]);
        }
    }

    #[tokio::test]
    async fn a_missing_folder_is_a_local_error() {
        let base = serve().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let err = get_into(&format!("{base}/good"), &dir.path().join("gone"))
            .await
            .expect_err("no folder");
        assert!(matches!(err, DownloadError::Local(..)), "{err}");
    }

    #[test]
    fn existing_needs_bytes_that_match_the_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(existing(dir.path(), "cat-remix", 1), None);
        std::fs::write(dir.path().join("cat-remix-1.jpg"), PNG).expect("write");
        assert_eq!(existing(dir.path(), "cat-remix", 1), None);
        std::fs::write(dir.path().join("cat-remix-1.webp"), b"RIFF\0\0\0\0WEBPVP8 ").expect("w");
        let found = existing(dir.path(), "cat-remix", 1).expect("webp found");
        assert_eq!((found.file.as_str(), found.bytes), ("cat-remix-1.webp", 16));
        assert_eq!(existing(dir.path(), "cat-remix", 2), None);
    }

    /// Fetches with private addresses refused.
    async fn get_public_only(url: &str, dir: &Path) -> Result<Downloaded, DownloadError> {
        let limits = DownloadLimits {
            allow_private: false,
            ..LIMITS
        };
        fetch(&reqwest::Client::new(), url, dir, "cat-remix", 1, limits).await
    }

    #[tokio::test]
    async fn private_addresses_are_refused_while_the_base_url_is_public() {
        let base = serve().await;
        let port = base.rsplit(':').next().expect("port");
        let cases = [
            (format!("{base}/good"), "127.0.0.1, a loopback address"),
            (
                format!("http://localhost:{port}/good"),
                "localhost resolves to",
            ),
            (
                format!("http://[::1]:{port}/good"),
                "::1, a loopback address",
            ),
            (
                format!("http://[::ffff:127.0.0.1]:{port}/good"),
                "a loopback address",
            ),
            (format!("http://2130706433:{port}/good"), "127.0.0.1"),
            (format!("http://0x7f.1:{port}/good"), "127.0.0.1"),
            ("http://0.0.0.0:1/x".to_owned(), "unspecified"),
            (
                "http://169.254.169.254/latest/meta-data".to_owned(),
                "link-local",
            ),
            ("https://10.0.0.1/a.png".to_owned(), "a private address"),
        ];
        for (url, words) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let err = get_public_only(&url, dir.path()).await.expect_err(&url);
            assert!(matches!(err, DownloadError::Permanent(_)), "{url}: {err}");
            assert!(err.to_string().contains(words), "{url}: {err}");
            assert!(err.to_string().contains("api.base_url"), "{url}: {err}");
            assert_files(dir.path(), &[]);
        }
    }

    #[tokio::test]
    async fn redirects_to_private_addresses_or_other_schemes_are_not_followed() {
        let base = serve().await;
        let port = base.rsplit(':').next().expect("port");
        // The first hop is a host name, which only the resolver would refuse: this client
        // keeps the system resolver so that the redirect check alone is under test.
        let client = reqwest::Client::builder()
            .redirect(Policy::custom(public_only::redirects))
            .build()
            .expect("client");
        let limits = DownloadLimits {
            allow_private: false,
            ..LIMITS
        };
        let url = format!("http://localhost:{port}/to-loopback");
        let err = client.get(&url).send().await.expect_err("to loopback");
        let refused = network_error(&url, limits, &err);
        assert!(matches!(refused, DownloadError::Permanent(_)), "{refused}");
        assert!(
            refused
                .to_string()
                .contains("it redirects to 127.0.0.1, a loopback address"),
            "{refused}"
        );
        let url = format!("http://localhost:{port}/to-file");
        let answer = client.get(&url).send().await.expect("not followed");
        assert_eq!(answer.status(), StatusCode::FOUND);
        let refused = check_status(&url, answer.status().as_u16()).expect_err("a 302");
        assert!(matches!(refused, DownloadError::Permanent(_)), "{refused}");
    }
}
