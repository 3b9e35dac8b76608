//! The HTTP client: one multipart request per attempt to the operation's endpoint, every file
//! (image, mask, references) streamed from its own file under a safe ASCII part name, the
//! answer read with a size cap and handed to [`classify`]. Retrying, pacing and pausing are
//! the pipeline's and the gate's business; the dry-run provider never sends anything.

use std::error::Error as _;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::multipart::{Form, Part};

use crate::config::{ApiConfig, Provider};
use crate::fsx::{self, Context as _, FsError};
use crate::image_info::{ImageFormat, SNIFF_LEN, sniff};
use crate::sidecar::{Operation, RemixRequest};

use super::{Outcome, classify};

/// The path appended to `base_url`, before the operation's name.
const API_PATH: &str = "/v1/ideogram-v3/";

/// One file sent as a form part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    /// The form name (`image`, `mask`, `style_reference_images`, ...).
    pub field: String,
    /// Where its bytes are.
    pub path: PathBuf,
    /// The stem the part's file name is made from (any text; made safe when sent).
    pub stem: String,
}

/// The largest answer read; a remix answer is a few KiB.
pub const ANSWER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// One request's outcome, and whether its whole upload went out (which decides whether a
/// request left without an answer may have been billed).
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// What the answer means.
    pub outcome: Outcome,
    /// Every byte of the image was handed to the connection.
    pub upload_completed: bool,
}

/// Talks to one provider's remix endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// `base_url` without its trailing `/`; empty for dry-run.
    base: String,
    /// Marked sensitive, so `Debug` never prints the key.
    auth: Option<(HeaderName, HeaderValue)>,
    request_timeout: Duration,
}

impl ApiClient {
    /// A client for `config`. For dry-run it has no endpoint and no key: only its HTTP client
    /// is of use.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS set-up), or the key holds characters an HTTP
    /// header cannot carry.
    pub fn new(config: &ApiConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(format!("remixd/{}", crate::VERSION))
            .build()?;
        let base = match (config.provider, &config.base_url) {
            (Provider::DryRun, _) | (_, None) => String::new(),
            (_, Some(base)) => base.trim_end_matches('/').to_owned(),
        };
        let auth = match (config.provider, &config.api_key) {
            (Provider::Kkiai, Some(key)) => Some((
                AUTHORIZATION,
                header_value(&http, &format!("Bearer {}", key.expose()))?,
            )),
            (Provider::Ideogram, Some(key)) => Some((
                HeaderName::from_static("api-key"),
                header_value(&http, key.expose())?,
            )),
            _ => None,
        };
        Ok(Self {
            http,
            base,
            auth,
            request_timeout: config.request_timeout,
        })
    }

    /// `{base_url}/v1/ideogram-v3/{operation}` (empty for dry-run).
    #[must_use]
    pub fn endpoint(&self, operation: Operation) -> String {
        if self.base.is_empty() {
            return String::new();
        }
        format!("{}{API_PATH}{}", self.base, operation.name())
    }

    /// Sends one request to its operation's endpoint: each file streamed from disk as its own
    /// part, then the text fields. Connection errors and timeouts come back as
    /// [`Outcome::Transient`], with [`Sent::upload_completed`] saying whether the files had
    /// gone out whole.
    ///
    /// # Errors
    /// [`FsError`] when a local file cannot be opened; nothing was sent then.
    pub async fn submit(
        &self,
        files: &[FilePart],
        request: &RemixRequest,
    ) -> Result<Sent, FsError> {
        let uploaded = Arc::new(AtomicBool::new(false));
        let form = form(files, request, &uploaded)?;
        let outcome = self.send(request.operation, form).await;
        Ok(Sent {
            outcome,
            upload_completed: uploaded.load(Ordering::Acquire),
        })
    }

    async fn send(&self, operation: Operation, form: Form) -> Outcome {
        let mut builder = self
            .http
            .post(self.endpoint(operation))
            .header(ACCEPT, "application/json")
            .timeout(self.request_timeout)
            .multipart(form);
        if let Some((name, value)) = &self.auth {
            builder = builder.header(name.clone(), value.clone());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(err) => return self.transient(&err),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match read_capped(response, ANSWER_MAX_BYTES).await {
            Ok(Some(body)) => classify(status, retry_after.as_deref(), &body),
            Ok(None) => Outcome::BadResponse {
                http_status: status,
                api_error: None,
                message: format!(
                    "the API's answer was too large (over {} MiB), so it cannot be a remix \
                     answer; check api.base_url, then requeue the job",
                    ANSWER_MAX_BYTES >> 20
                ),
            },
            Err(err) => self.transient(&err),
        }
    }

    /// The underlying HTTP client, shared with the downloads.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn transient(&self, err: &reqwest::Error) -> Outcome {
        let message = if err.is_connect() {
            format!("could not reach the API: {}", error_chain(err))
        } else if err.is_timeout() {
            format!(
                "the API did not answer within {}",
                humantime::format_duration(self.request_timeout)
            )
        } else {
            format!("the request to the API failed: {}", error_chain(err))
        };
        Outcome::Transient {
            http_status: err.status().map(|s| s.as_u16()),
            message,
        }
    }
}

/// A sensitive header value; an invalid one becomes reqwest's own builder error, which names
/// no value.
fn header_value(http: &reqwest::Client, text: &str) -> Result<HeaderValue, reqwest::Error> {
    match HeaderValue::from_str(text) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Ok(value)
        }
        Err(_) => Err(http
            .get("http://invalid.invalid/")
            .header(AUTHORIZATION, text)
            .build()
            .expect_err("a header value that failed to parse fails again")),
    }
}

/// How much of a file one read takes while uploading.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The form: each file streamed from its open file (memory does not grow with its size),
/// then every field as a text part, in order. `uploaded` is set once the last file's stream
/// has ended: the upload is then complete but for the few text fields.
fn form(
    files: &[FilePart],
    request: &RemixRequest,
    uploaded: &Arc<AtomicBool>,
) -> Result<Form, FsError> {
    let mut form = Form::new();
    let last = files.len().saturating_sub(1);
    for (i, file) in files.iter().enumerate() {
        let done = (i == last).then(|| Arc::clone(uploaded));
        form = form.part(file.field.clone(), file_part(file, done)?);
    }
    if files.is_empty() {
        uploaded.store(true, Ordering::Release);
    }
    for (name, value) in &request.fields {
        form = form.text(name.clone(), value.clone());
    }
    Ok(form)
}

/// One file as a part. Its name is made from the stem with nothing a header could trip on
/// (the real name is in `metadata.json`, not the API's business), its extension and media
/// type from its bytes.
fn file_part(file: &FilePart, uploaded: Option<Arc<AtomicBool>>) -> Result<Part, FsError> {
    const ACTION: &str = "opening a file to upload";
    let path = &file.path;
    let mut opened = fsx::open_nofollow(path).context(ACTION, path)?;
    let meta = opened.metadata().context(ACTION, path)?;
    if !meta.is_file() {
        // Checked again on this very descriptor: whatever the path names now, only a plain
        // file's bytes are ever sent.
        return Err(std::io::Error::other("not a plain file")).context(ACTION, path);
    }
    let mut head = [0u8; SNIFF_LEN];
    let n = (&opened)
        .take(SNIFF_LEN as u64)
        .read(&mut head)
        .context(ACTION, path)?;
    std::io::Seek::rewind(&mut opened).context(ACTION, path)?;
    let format = sniff(&head[..n]).unwrap_or(ImageFormat::Png);
    let len = meta.len();
    // Each read is a hop to the blocking pool; reading in large chunks keeps a typical image
    // to one or two hops while memory stays bounded whatever the file's size.
    let stream = tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::from_std(opened),
        UPLOAD_CHUNK,
    );
    let stream = stream.chain(futures_util::stream::poll_fn(move |_| {
        if let Some(flag) = &uploaded {
            flag.store(true, Ordering::Release);
        }
        std::task::Poll::Ready(None)
    }));
    Ok(
        Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
            .file_name(crate::text::safe_file_name(&file.stem, format.ext()))
            .mime_str(format.mime())
            .expect("the image formats' media types are valid"),
    )
}

/// The whole body, or `None` past `max` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// An error and its causes in one line (reqwest's own text alone says little, e.g. "error
/// sending request"). No header, hence no key, is ever part of it.
pub(crate) fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{DefaultBodyLimit, Multipart, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::api::PauseReason;
    use crate::config::ApiKey;

    /// What the fake API saw of one request.
    #[derive(Debug, Default, Clone)]
    struct Seen {
        headers: Vec<(String, String)>,
        image_name: Option<String>,
        image_type: Option<String>,
        image_len: u64,
        image_sha256: String,
        fields: Vec<(String, String)>,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    async fn remix(State(log): State<Log>, headers: HeaderMap, mut form: Multipart) -> String {
        let mut seen = Seen {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            ..Seen::default()
        };
        while let Some(mut field) = form.next_field().await.expect("multipart") {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "image" {
                seen.image_name = field.file_name().map(str::to_owned);
                seen.image_type = field.content_type().map(str::to_owned);
                let mut hash = Sha256::new();
                while let Some(chunk) = field.chunk().await.expect("image chunk") {
                    seen.image_len += chunk.len() as u64;
                    hash.update(&chunk);
                }
                seen.image_sha256 = hex::encode(hash.finalize());
            } else {
                seen.fields
                    .push((name, field.text().await.expect("text field")));
            }
        }
        log.lock().expect("log").push(seen);
        r#"{"created":"2025","data":[{"url":"https://x/1.png","is_image_safe":true,"seed":3}]}"#
            .to_owned()
    }

    async fn busy(_upload: axum::body::Bytes) -> impl IntoResponse {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "17")],
            "slow down",
        )
    }

    /// A fake API on a loopback port; returns its base URL and what it saw.
    async fn serve() -> (String, Log) {
        let log = Log::default();
        let app = axum::Router::new()
            .route("/v1/ideogram-v3/remix", axum::routing::post(remix))
            .route("/busy/v1/ideogram-v3/remix", axum::routing::post(busy))
            .layer(DefaultBodyLimit::disable())
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), log)
    }

    fn config(provider: Provider, base_url: &str) -> ApiConfig {
        ApiConfig {
            provider,
            base_url: Some(base_url.to_owned()),
            api_key: Some(ApiKey::new("sekrit-key".into())),
            api_key_source: "$REMIXD_API_KEY".into(),
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
        }
    }

    fn request() -> RemixRequest {
        RemixRequest {
            fields: vec![
                ("prompt".into(), "a cat in a hat".into()),
                ("style_codes".into(), "AAAAAAAA".into()),
                ("style_codes".into(), "BBBBBBBB".into()),
            ],
            num_images: 1,
            operation: Operation::Remix,
        }
    }

    fn image_part(path: &std::path::Path, stem: &str) -> Vec<FilePart> {
        vec![FilePart {
            field: "image".into(),
            path: path.to_path_buf(),
            stem: stem.into(),
        }]
    }

    fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
        seen.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    async fn submit_png(client: &ApiClient, bytes: &[u8]) -> Outcome {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cat.png");
        std::fs::write(&path, bytes).expect("write image");
        client
            .submit(&image_part(&path, "cat"), &request())
            .await
            .expect("image opens")
            .outcome
    }

    #[tokio::test]
    async fn kkiai_sends_bearer_image_and_fields() {
        let (base, log) = serve().await;
        let client = ApiClient::new(&config(Provider::Kkiai, &base)).expect("client");
        assert_eq!(
            client.endpoint(Operation::Remix),
            format!("{base}v1/ideogram-v3/remix")
        );
        assert_eq!(
            client.endpoint(Operation::ReplaceBackground),
            format!("{base}v1/ideogram-v3/replace-background")
        );
        let png = b"\x89PNG\r\n\x1a\nsome image bytes";
        let outcome = submit_png(&client, png).await;
        assert!(
            matches!(outcome, Outcome::Answer(ref a) if a.items.len() == 1),
            "{outcome:?}"
        );
        let seen = log.lock().expect("log")[0].clone();
        assert_eq!(header(&seen, "authorization"), Some("Bearer sekrit-key"));
        assert_eq!(header(&seen, "api-key"), None);
        assert_eq!(header(&seen, "accept"), Some("application/json"));
        assert!(header(&seen, "user-agent").is_some_and(|ua| ua.starts_with("remixd/")));
        assert_eq!(seen.image_name.as_deref(), Some("cat.png"));
        assert_eq!(seen.image_type.as_deref(), Some("image/png"));
        assert_eq!(seen.image_sha256, hex::encode(Sha256::digest(png)));
        assert_eq!(seen.fields, request().fields);
    }

    #[tokio::test]
    async fn ideogram_sends_api_key_header() {
        let (base, log) = serve().await;
        let client = ApiClient::new(&config(Provider::Ideogram, &base)).expect("client");
        submit_png(&client, b"\x89PNG\r\n\x1a\n").await;
        let seen = log.lock().expect("log")[0].clone();
        assert_eq!(header(&seen, "api-key"), Some("sekrit-key"));
        assert_eq!(header(&seen, "authorization"), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let client = ApiClient::new(&config(Provider::Kkiai, "http://x")).expect("client");
        assert!(!format!("{client:?}").contains("sekrit"));
    }

    #[test]
    fn a_key_that_cannot_be_a_header_is_refused_without_showing_it() {
        let mut cfg = config(Provider::Ideogram, "http://x");
        cfg.api_key = Some(ApiKey::new("bad\nkey".into()));
        let err = ApiClient::new(&cfg).expect_err("newline in key");
        assert!(!err.to_string().contains("bad"));
    }

    #[test]
    fn dry_run_has_no_endpoint_and_no_key() {
        let mut cfg = config(Provider::DryRun, "http://x");
        cfg.base_url = None;
        let client = ApiClient::new(&cfg).expect("client");
        assert_eq!(client.endpoint(Operation::Inpaint), "");
        assert!(client.auth.is_none());
    }

    #[tokio::test]
    async fn too_many_requests_carries_retry_after() {
        let (base, _log) = serve().await;
        let client =
            ApiClient::new(&config(Provider::Kkiai, &format!("{base}busy"))).expect("client");
        let outcome = submit_png(&client, b"\x89PNG\r\n\x1a\n").await;
        assert_eq!(
            outcome,
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(17)),
                max_inflight: None,
            }
        );
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let client =
            ApiClient::new(&config(Provider::Kkiai, &format!("http://{addr}"))).expect("client");
        let outcome = submit_png(&client, b"\x89PNG\r\n\x1a\n").await;
        let Outcome::Transient {
            http_status: None,
            message,
        } = outcome
        else {
            panic!("expected transient, got {outcome:?}");
        };
        assert!(message.starts_with("could not reach the API"), "{message}");
        assert!(!message.contains("sekrit"));
    }

    #[tokio::test]
    async fn a_missing_image_is_a_local_error() {
        let client = ApiClient::new(&config(Provider::Kkiai, "http://127.0.0.1:9")).expect("c");
        let err = client
            .submit(
                &image_part(std::path::Path::new("/nonexistent/x.png"), "x"),
                &request(),
            )
            .await
            .expect_err("no such file");
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_large_image_streams_whole() {
        const SIZE: u64 = 20 * 1024 * 1024;
        let (base, log) = serve().await;
        let client = ApiClient::new(&config(Provider::Kkiai, &base)).expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.png");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\n").expect("write");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(SIZE))
            .expect("sparse extend");
        let outcome = client
            .submit(&image_part(&path, "big"), &request())
            .await
            .expect("opens")
            .outcome;
        assert!(matches!(outcome, Outcome::Answer(_)), "{outcome:?}");
        assert_eq!(log.lock().expect("log")[0].image_len, SIZE);
    }

    #[tokio::test]
    async fn unauthorized_pauses() {
        // Reads the whole upload first: a server that answers mid-upload and closes makes the
        // client see a broken pipe instead of the answer, which is a different test.
        async fn refuse(_upload: axum::body::Bytes) -> impl IntoResponse {
            (StatusCode::UNAUTHORIZED, r#"{"message":"invalid key"}"#)
        }
        let app = axum::Router::new().route("/v1/ideogram-v3/remix", axum::routing::post(refuse));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client =
            ApiClient::new(&config(Provider::Kkiai, &format!("http://{addr}"))).expect("client");
        let outcome = submit_png(&client, b"\x89PNG\r\n\x1a\n").await;
        assert!(
            matches!(
                outcome,
                Outcome::Pause {
                    reason: PauseReason::Unauthorized,
                    http_status: 401,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
}
