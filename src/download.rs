//! Fetching one output: streamed to a temporary file in the job folder, checked (HTTP status,
//! length, image magic), then renamed to `STEM-remix-N.EXT` with EXT from the bytes. Retrying
//! is the pipeline's business; this module says whether a failure is worth retrying.
//!
//! The URLs come from the API's answer, so they are not trusted: only http(s), and, while
//! `api.base_url` is public, never a private, loopback, link-local or unspecified address
//! (checked for literal addresses, for every address a host name resolves to, and for every
//! redirect), so a hostile answer cannot make remixd fetch from the local network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::{Action, Attempt, Policy};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::api::client::error_chain;
use crate::fsx;
use crate::image_info::{ImageFormat, SNIFF_LEN, sniff};
use crate::job::describe::hash_file;

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// Worth another try (connection, timeout, 5xx, 429, cut short).
    #[error("{0}")]
    Transient(String),
    /// Will not get better (404/410/403, not an image, too large, bad URL).
    #[error("{0}")]
    Permanent(String),
    /// Writing it failed: never the file's fault. The flag says it was for want of space or
    /// a writable disk (ENOSPC, EDQUOT, EROFS), which pauses claiming.
    #[error("{0}")]
    Local(String, bool),
}

/// Limits for one download.
#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    /// Whole-download timeout.
    pub timeout: Duration,
    /// Largest output accepted.
    pub max_bytes: u64,
    /// Whether the output may be on a private, loopback, link-local or unspecified address:
    /// only when `api.base_url` is on one itself (see [`private_allowed`]).
    pub allow_private: bool,
}

/// Whether outputs may be fetched from private addresses, judged by the API's `base_url`:
/// yes when there is none (dry-run) or its host is itself a loopback or private address
/// (written as an address, or `localhost`), as for a local proxy or a test server.
#[must_use]
pub fn private_allowed(base_url: Option<&str>) -> bool {
    let Some(base) = base_url else {
        return true;
    };
    let Ok(url) = Url::parse(base) else {
        return false;
    };
    if let Some(ip) = host_ip(&url) {
        return non_public(ip).is_some();
    }
    let name = url.host_str().unwrap_or_default();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The URL's host when it is written as an address (the URL parser has already turned forms
/// such as `0x7f.1` or `2130706433` into dotted IPv4).
fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// What kind of non-public address `ip` is (`"a loopback address"`, ...), if it is one.
#[must_use]
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_public_v4(ip),
        IpAddr::V6(ip) => non_public_v6(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // 100.64.0.0/10 is carrier-grade NAT space: private to some network, never public.
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if let Some(v4) = embedded_v4(ip) {
        non_public_v4(v4)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Some("a private address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else {
        None
    }
}

/// The IPv4 address carried by an IPv4-mapped, IPv4-compatible or NAT64 (`64:ff9b::/96`)
/// address, which reaches that IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match ip.segments()[..6] {
        [0, 0, 0, 0, 0, 0 | 0xffff] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(v4),
        _ => None,
    }
}

/// Why an output's address is refused; found again in reqwest's error chain.
#[derive(Debug)]
struct NotPublic(String);

impl std::fmt::Display for NotPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotPublic {}

/// The refusal for a URL whose host is written as a non-public address. Host names are the
/// resolver's to check ([`PublicOnly`]).
fn literal_refusal(url: &Url, how: &str) -> Option<NotPublic> {
    let ip = host_ip(url)?;
    non_public(ip).map(|why| NotPublic(format!("{how} {ip}, {why}")))
}

/// Resolves host names for downloads, refusing a name if any of its addresses is not
/// public. The connection uses the very addresses checked, so a name cannot be re-pointed
/// between the check and the connect.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let refused = addrs
                .iter()
                .find_map(|a| non_public(a.ip()).map(|why| (a.ip(), why)));
            if let Some((ip, why)) = refused {
                return Err(NotPublic(format!("its host {host} resolves to {ip}, {why}")).into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Most redirects followed for one output.
const MAX_REDIRECTS: usize = 10;

/// Checks each hop's address. Redirects to other schemes never get here: reqwest does not
/// follow them, and the 3xx is then refused as a status.
fn public_redirects(attempt: Attempt) -> Action {
    if let Some(refusal) = literal_refusal(attempt.url(), "it redirects to") {
        return attempt.error(refusal);
    }
    Policy::limited(MAX_REDIRECTS).redirect(attempt)
}

/// The client for downloads while private addresses are refused: public host names only,
/// redirects checked hop by hop. Built once.
fn public_only_client() -> Result<&'static reqwest::Client, DownloadError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .redirect(Policy::custom(public_redirects))
        .dns_resolver(Arc::new(PublicOnly))
        .user_agent(format!("remixd/{}", crate::VERSION))
        .build()
        .map_err(|e| {
            DownloadError::Transient(format!(
                "could not set up the HTTP client for downloads: {}",
                error_chain(&e)
            ))
        })?;
    Ok(CLIENT.get_or_init(|| client))
}

/// Our refusal, wherever reqwest and hyper wrapped it in their errors.
fn find_not_public(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<NotPublic>() {
            return Some(refusal.0.clone());
        }
        // io::Error::source skips the error it wraps, so look inside it too.
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(refusal) = wrapped.and_then(|w| w.downcast_ref::<NotPublic>()) {
            return Some(refusal.0.clone());
        }
        cause = e.source();
    }
    None
}

fn refused_address(url: &str, refusal: &str) -> DownloadError {
    DownloadError::Permanent(format!(
        "the output at {url} was not fetched: {refusal}. remixd fetches outputs only from \
         public addresses while api.base_url is public; check api.base_url"
    ))
}

/// Fetches `url` into `dir` as `{stem}-remix-{n}.{ext}`.
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
    let part = dir.join(format!(".{stem}-remix-{n}.part"));
    let result = match fetch_into(http, url, &part, limits).await {
        Ok(kept) => {
            keep(
                &part,
                dir,
                format!("{stem}-remix-{n}.{}", kept.format.ext()),
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
    match tokio::task::spawn_blocking(move || fsx::rename_durable(&from, &to)).await {
        Ok(Ok(())) => Ok(Downloaded {
            file,
            bytes: kept.bytes,
            sha256: kept.sha256,
            format: kept.format,
        }),
        Ok(Err(e)) => Err(local("keeping the output as", &target, &e)),
        Err(e) => Err(DownloadError::Local(
            format!("keeping the output {file}: {e}"),
            false,
        )),
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
        if let Some(refusal) = literal_refusal(&parsed, "its host is") {
            return Err(refused_address(url, &refusal.0));
        }
        public_only_client()?
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
    let write_err = |e: std::io::Error| local("writing the output", part, &e);
    let mut out = tokio::fs::File::create(part).await.map_err(write_err)?;
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
        out.write_all(&chunk).await.map_err(write_err)?;
    }
    out.flush().await.map_err(write_err)?;
    out.sync_all().await.map_err(write_err)?;
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
    if let Some(refusal) = find_not_public(err) {
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

fn local(action: &str, path: &Path, err: &std::io::Error) -> DownloadError {
    DownloadError::Local(
        format!("{action} {}: {err}", path.display()),
        crate::fsx::is_capacity_error(err),
    )
}

/// An output already fetched by an earlier run (`{stem}-remix-{n}.*` with image bytes), re-hashed.
#[must_use]
pub fn existing(dir: &Path, stem: &str, n: usize) -> Option<Downloaded> {
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp]
        .into_iter()
        .find_map(|format| {
            let file = format!("{stem}-remix-{n}.{}", format.ext());
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
    use tokio::io::AsyncReadExt;

    use super::*;

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
        fetch(&reqwest::Client::new(), url, dir, "cat", 2, LIMITS).await
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
        assert_eq!(existing(dir.path(), "cat", 2), Some(got));
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
        assert_eq!(existing(dir.path(), "cat", 1), None);
        std::fs::write(dir.path().join("cat-remix-1.jpg"), PNG).expect("write");
        assert_eq!(existing(dir.path(), "cat", 1), None);
        std::fs::write(dir.path().join("cat-remix-1.webp"), b"RIFF\0\0\0\0WEBPVP8 ").expect("w");
        let found = existing(dir.path(), "cat", 1).expect("webp found");
        assert_eq!((found.file.as_str(), found.bytes), ("cat-remix-1.webp", 16));
        assert_eq!(existing(dir.path(), "cat", 2), None);
    }

    #[test]
    fn non_public_addresses_are_named() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.0.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fc00::1", Some("private")),
            ("fd12:3456::1", Some("private")),
            ("fec0::1", Some("private")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (ip, want) in cases {
            let got = non_public(ip.parse().expect("ip"));
            match want {
                Some(word) => assert!(got.is_some_and(|w| w.contains(word)), "{ip}: {got:?}"),
                None => assert_eq!(got, None, "{ip}"),
            }
        }
    }

    #[test]
    fn private_outputs_are_allowed_only_for_a_private_base_url() {
        let cases = [
            (None, true),
            (Some("http://127.0.0.1:8080"), true),
            (Some("http://localhost:9"), true),
            (Some("http://[::1]:80/x"), true),
            (Some("https://10.0.0.5/api"), true),
            (Some("https://www.kkiai.com/ideogram"), false),
            (Some("https://api.ideogram.ai"), false),
            (Some("https://8.8.8.8"), false),
            (Some("https://localhost.example.com"), false),
            (Some("not a url"), false),
        ];
        for (base, want) in cases {
            assert_eq!(private_allowed(base), want, "{base:?}");
        }
    }

    /// Fetches with private addresses refused.
    async fn get_public_only(url: &str, dir: &Path) -> Result<Downloaded, DownloadError> {
        let limits = DownloadLimits {
            allow_private: false,
            ..LIMITS
        };
        fetch(&reqwest::Client::new(), url, dir, "cat", 1, limits).await
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
            .redirect(Policy::custom(public_redirects))
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
