//! A fake Ideogram 3.0 API on loopback (port 0), speaking the real protocol:
//! `POST /v1/ideogram-v3/{remix,reframe,replace-background,inpaint}` as `multipart/form-data`
//! with per-provider authentication and each operation's required fields enforced,
//! and `GET /files/{name}` serving the outputs it announced. Answers come from a scripted
//! FIFO, then per-image rules, then a default; every upload and fetch is recorded so tests
//! can check exactly what remixd sent and how often.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::env::{API_KEY, sha256};
use crate::images;

/// The `created` stamp of every native answer.
pub const CREATED: &str = "2025-08-27T22:13:44.972624193+08:00";

/// Which provider's authentication the fake insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Authorization: Bearer KEY`.
    Kkiai,
    /// `Api-Key: KEY`.
    Ideogram,
}

/// What goes wrong when an output is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFault {
    /// 404, every time.
    NotFound,
    /// 500 on the first fetch, then the file.
    FailOnce,
    /// 200 with bytes that are no image.
    NotImage,
    /// The first fetch answers after this long; later ones at once.
    SlowOnce(Duration),
}

/// A 200 answer with images.
#[derive(Debug, Clone, Default)]
pub struct Images {
    /// Wrapped in a proxy envelope (`{"code":200,"message":"success","data":[...]}`).
    pub envelope: bool,
    /// 1-based positions withheld for safety (`url` null, `is_image_safe` false).
    pub unsafe_at: Vec<usize>,
    /// Faults for the files at these 1-based positions.
    pub faults: Vec<(usize, FileFault)>,
    /// How many items; default: the request's `num_images` (1 when absent).
    pub count: Option<usize>,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with images.
    Images(Images),
    /// 200 with an asynchronous task envelope naming this task id.
    Task(String),
    /// Any status, headers and body.
    Status {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body text.
        body: String,
    },
    /// 200 with an HTML body.
    NotJson,
    /// The inner reply after a pause.
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    /// A native 200 answer with `num_images` outputs.
    pub fn ok() -> Self {
        Self::Images(Images::default())
    }

    /// The proxy envelope around a native answer.
    pub fn envelope() -> Self {
        Self::Images(Images {
            envelope: true,
            ..Images::default()
        })
    }

    /// Withholds the outputs at these 1-based positions.
    pub fn unsafe_at(self, positions: &[usize]) -> Self {
        self.map_images(|i| i.unsafe_at.extend_from_slice(positions))
    }

    /// A fault for the output at this 1-based position.
    pub fn fault_at(self, position: usize, fault: FileFault) -> Self {
        self.map_images(|i| i.faults.push((position, fault)))
    }

    /// A status with a body (JSON when it looks like JSON).
    pub fn status(status: u16, body: &str) -> Self {
        Self::Status {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// Adds a header to a [`Reply::Status`].
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match &mut self {
            Self::Status { headers, .. } => headers.push((name.into(), value.into())),
            other => panic!("header on a non-status reply {other:?}"),
        }
        self
    }

    /// This reply after `delay`.
    pub fn delayed(self, delay: Duration) -> Self {
        Self::Delayed(delay, Box::new(self))
    }

    fn map_images(self, f: impl FnOnce(&mut Images)) -> Self {
        match self {
            Self::Images(mut images) => {
                f(&mut images);
                Self::Images(images)
            }
            Self::Delayed(delay, inner) => inner.map_images(f).delayed(delay),
            other => panic!("not an images reply: {other:?}"),
        }
    }
}

/// One file part as the fake received it.
#[derive(Debug, Clone)]
pub struct FileSeen {
    /// The form name (`image`, `mask`, `style_reference_images`, ...).
    pub name: String,
    /// The part's file name.
    pub file_name: Option<String>,
    /// The part's content type.
    pub content_type: Option<String>,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// One upload as the fake received it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The operation posted to (`remix`, `reframe`, `replace-background`, `inpaint`).
    pub operation: String,
    /// Every file part, in order (the image included).
    pub files: Vec<FileSeen>,
    /// When it arrived.
    pub at: Instant,
    /// The `TAG` of a `/p/TAG/...` base URL ([`FakeApi::url_via`]), `""` for the plain one:
    /// tells which of several processes sent it.
    pub via: String,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `Api-Key` header.
    pub api_key: Option<String>,
    /// `Accept` header.
    pub accept: Option<String>,
    /// `Content-Type` header of the request.
    pub content_type: Option<String>,
    /// The `image` part's file name.
    pub file_name: Option<String>,
    /// The `image` part's content type.
    pub image_type: Option<String>,
    /// SHA-256 of the `image` part (empty when there was none).
    pub sha256: String,
    /// Length of the `image` part.
    pub len: usize,
    /// How many `image` parts came.
    pub image_parts: usize,
    /// Every other part, as text, in order (repeated names kept).
    pub fields: Vec<(String, String)>,
    /// Why the body could not be read as multipart, if it could not.
    pub parse_error: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The body answered.
    pub body: String,
    /// When the handler handed the answer to the server to send (after any delay); `None`
    /// while it is still pending, or when the connection died before that. remixd cannot
    /// have read the answer before this moment.
    pub answered_at: Option<Instant>,
}

impl Upload {
    /// The file parts named `name`, in order.
    pub fn files_named(&self, name: &str) -> Vec<&FileSeen> {
        self.files.iter().filter(|f| f.name == name).collect()
    }

    /// The first value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The answer as JSON (panics when it was not JSON).
    pub fn response_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct StoredFile {
    bytes: Vec<u8>,
    fault: Option<FileFault>,
    fetches: u32,
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    sticky: HashMap<String, Reply>,
    default: Option<Reply>,
    uploads: Vec<Upload>,
    files: HashMap<String, StoredFile>,
    requests: Vec<String>,
    next_id: u64,
    latency: Option<Latency>,
    /// Images asked for by requests received and not answered yet, and the most ever.
    inflight_images: u64,
    peak_inflight_images: u64,
}

/// Counts a request's images in flight until its answer is handed over, or its connection
/// dies (the handler's future is dropped).
struct InFlight<'a> {
    inner: &'a Inner,
    images: u64,
}

impl<'a> InFlight<'a> {
    fn start(inner: &'a Inner, images: u64) -> Self {
        let mut script = inner.script.lock().unwrap();
        script.inflight_images += images;
        script.peak_inflight_images = script.peak_inflight_images.max(script.inflight_images);
        Self { inner, images }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut script) = self.inner.script.lock() {
            script.inflight_images -= self.images;
        }
    }
}

/// A random delay before every answer (uploads and file fetches), from a seeded generator.
struct Latency {
    min: Duration,
    max: Duration,
    state: u64,
}

impl Latency {
    fn next(&mut self) -> Duration {
        // splitmix64: reproducible from the seed, no extra dependency.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let span = self.max.saturating_sub(self.min).as_micros() as u64 + 1;
        self.min + Duration::from_micros(z % span)
    }
}

struct Inner {
    mode: Mode,
    base: String,
    script: Mutex<Script>,
}

/// The running fake. Dropping it stops the server.
pub struct FakeApi {
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeApi {
    /// Starts a server on `127.0.0.1:0` in its own thread and runtime.
    pub fn start(mode: Mode) -> Self {
        Self::start_on(mode, 0)
    }

    /// A loopback port nothing listens on (bound, then released): connections to it are
    /// refused until [`FakeApi::start_on`] starts a server there.
    pub fn unused_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Starts a server on `127.0.0.1:port` (0: any free port).
    pub fn start_on(mode: Mode, port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            mode,
            base: format!("http://127.0.0.1:{port}"),
            script: Mutex::new(Script::default()),
        });
        let app = Router::new()
            .route("/v1/ideogram-v3/{operation}", post(remix))
            .route("/p/{tag}/v1/ideogram-v3/{operation}", post(remix_via))
            .route("/files/{name}", get(file))
            .route("/hostile/endless", get(endless))
            .route("/hostile/trickle", get(trickle))
            .route("/hostile/loop", get(redirect_loop))
            .fallback(fallback)
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(Arc::clone(&inner));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("fake-api-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let server = axum::serve(listener, app);
                    tokio::select! {
                        r = server => r.unwrap(),
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        Self {
            inner,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT`, the `api.base_url` to configure.
    pub fn url(&self) -> String {
        self.inner.base.clone()
    }

    /// A base URL that marks the uploads sent through it with `tag` ([`Upload::via`]).
    pub fn url_via(&self, tag: &str) -> String {
        format!("{}/p/{tag}", self.inner.base)
    }

    /// The endpoint remixd must post to.
    pub fn endpoint(&self) -> String {
        self.endpoint_of("remix")
    }

    /// The endpoint of `operation` (`reframe`, `inpaint`, ...).
    pub fn endpoint_of(&self, operation: &str) -> String {
        format!("{}/v1/ideogram-v3/{operation}", self.inner.base)
    }

    /// The provider mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Queues a reply for the next upload not covered by [`FakeApi::always_for`].
    pub fn push_reply(&self, reply: Reply) {
        self.script().queue.push_back(reply);
    }

    /// Answers every upload of the image with this SHA-256 with `reply`.
    pub fn always_for(&self, sha: &str, reply: Reply) {
        self.script().sticky.insert(sha.to_string(), reply);
    }

    /// The reply when nothing is queued (default: [`Reply::ok`]).
    pub fn set_default(&self, reply: Reply) {
        self.script().default = Some(reply);
    }

    /// Delays every later answer (uploads and output fetches) by a random time in
    /// `min..=max`, drawn from a generator seeded with `seed`.
    pub fn set_latency(&self, min: Duration, max: Duration, seed: u64) {
        self.script().latency = Some(Latency {
            min,
            max,
            state: seed,
        });
    }

    /// The most images ever in flight at once: asked for by requests received and not yet
    /// answered, whoever sent them.
    pub fn peak_inflight_images(&self) -> u64 {
        self.script().peak_inflight_images
    }

    /// Every upload so far, in arrival order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.script().uploads.clone()
    }

    /// Uploads of the image with this SHA-256.
    pub fn uploads_of(&self, sha: &str) -> Vec<Upload> {
        self.uploads()
            .into_iter()
            .filter(|u| u.sha256 == sha)
            .collect()
    }

    /// The one upload of `image` (panics unless it was uploaded exactly once).
    pub fn only_upload_of(&self, image: &[u8]) -> Upload {
        let uploads = self.uploads_of(&sha256(image));
        assert_eq!(uploads.len(), 1, "uploads of one image: {uploads:#?}");
        uploads.into_iter().next().unwrap()
    }

    /// Every request line (`METHOD /path`) seen, any route.
    pub fn requests(&self) -> Vec<String> {
        self.script().requests.clone()
    }

    /// The bytes served at `url` (one of the announced outputs).
    pub fn file_bytes(&self, url: &str) -> Option<Vec<u8>> {
        let name = url.rsplit('/').next()?;
        self.script().files.get(name).map(|f| f.bytes.clone())
    }

    /// How often the output at `url` was fetched.
    pub fn fetches(&self, url: &str) -> u32 {
        let name = url.rsplit('/').next().unwrap_or_default();
        self.script().files.get(name).map_or(0, |f| f.fetches)
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.inner.script.lock().unwrap()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn read_form(multipart: Result<Multipart, MultipartRejection>, upload: &mut Upload) {
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(e) => {
            upload.parse_error = Some(e.body_text());
            return;
        }
    };
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let file_name = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(str::to_string);
                let bytes = match field.bytes().await {
                    Ok(b) => b,
                    Err(e) => {
                        upload.parse_error = Some(e.body_text());
                        return;
                    }
                };
                if FILE_PARTS.contains(&name.as_str()) {
                    upload.files.push(FileSeen {
                        name: name.clone(),
                        file_name: file_name.clone(),
                        content_type: content_type.clone(),
                        sha256: sha256(&bytes),
                    });
                }
                if name == "image" {
                    upload.image_parts += 1;
                    upload.file_name = file_name;
                    upload.image_type = content_type;
                    upload.sha256 = sha256(&bytes);
                    upload.len = bytes.len();
                } else if !FILE_PARTS.contains(&name.as_str()) {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    upload.fields.push((name, text));
                }
            }
            Ok(None) => return,
            Err(e) => {
                upload.parse_error = Some(e.body_text());
                return;
            }
        }
    }
}

/// The form names that carry files.
const FILE_PARTS: [&str; 5] = [
    "image",
    "mask",
    "style_reference_images",
    "character_reference_images",
    "character_reference_images_mask",
];

/// What each operation requires besides the image, as the official reference says: a 400
/// naming what is missing, or an unknown operation's 404.
fn operation_refusal(upload: &Upload) -> Option<(u16, String)> {
    let has_field = |name: &str| upload.field(name).is_some_and(|v| !v.trim().is_empty());
    let missing = match upload.operation.as_str() {
        "inpaint" if upload.files_named("mask").len() != 1 => Some("mask"),
        "remix" | "replace-background" | "inpaint" => (!has_field("prompt")).then_some("prompt"),
        "reframe" => (!has_field("resolution")).then_some("resolution"),
        other => {
            return Some((
                404,
                json!({"error": format!("no operation {other}")}).to_string(),
            ));
        }
    };
    if let Some(name) = missing {
        return Some((
            400,
            json!({"error": format!("{name} is required")}).to_string(),
        ));
    }
    if upload.files_named("character_reference_images").len() > 1 {
        return Some((
            400,
            json!({"error": "at most one character reference"}).to_string(),
        ));
    }
    None
}

/// What the fake refuses before any script applies: bad key, wrong `Accept`, broken form.
fn refusal(mode: Mode, upload: &Upload) -> Option<(u16, String)> {
    let authorised = match mode {
        Mode::Kkiai => upload.authorization.as_deref() == Some(&format!("Bearer {API_KEY}")),
        Mode::Ideogram => upload.api_key.as_deref() == Some(API_KEY),
    };
    if !authorised {
        return Some((
            401,
            json!({"code": 401, "message": "invalid api key"}).to_string(),
        ));
    }
    if !upload
        .accept
        .as_deref()
        .is_some_and(|a| a.contains("application/json"))
    {
        return Some((
            406,
            json!({"error": "Accept must be application/json"}).to_string(),
        ));
    }
    if let Some(problem) = &upload.parse_error {
        return Some((
            400,
            json!({"error": format!("bad multipart: {problem}")}).to_string(),
        ));
    }
    if upload.image_parts != 1 {
        return Some((
            400,
            json!({"error": "exactly one image part is required"}).to_string(),
        ));
    }
    operation_refusal(upload)
}

struct Planned {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

impl Inner {
    fn plan(&self, upload: &Upload) -> Planned {
        if let Some((status, body)) = refusal(self.mode, upload) {
            return Planned {
                status,
                headers: Vec::new(),
                body,
                delay: Duration::ZERO,
            };
        }
        let mut script = self.script.lock().unwrap();
        let reply = script
            .sticky
            .get(&upload.sha256)
            .cloned()
            .or_else(|| script.queue.pop_front())
            .or_else(|| script.default.clone())
            .unwrap_or_else(Reply::ok);
        let latency = script
            .latency
            .as_mut()
            .map_or(Duration::ZERO, Latency::next);
        self.render(&mut script, reply, upload, latency)
    }

    fn render(
        &self,
        script: &mut Script,
        reply: Reply,
        upload: &Upload,
        delay: Duration,
    ) -> Planned {
        let (status, headers, body) = match reply {
            Reply::Delayed(d, inner) => return self.render(script, *inner, upload, delay + d),
            Reply::Images(images) => (200, Vec::new(), self.images(script, &images, upload)),
            Reply::Task(task_id) => {
                let body = json!({"code": 200, "message": "success", "request_id": "req-1",
                    "data": {"task_id": task_id, "task_status": "pending",
                             "created_at": 1_756_300_000, "updated_at": 1_756_300_000}});
                (200, Vec::new(), body.to_string())
            }
            Reply::Status {
                status,
                headers,
                body,
            } => (status, headers, body),
            Reply::NotJson => (
                200,
                vec![("content-type".into(), "text/html".into())],
                "<html><body>502 Bad Gateway</body></html>".into(),
            ),
        };
        Planned {
            status,
            headers,
            body,
            delay,
        }
    }

    fn images(&self, script: &mut Script, images: &Images, upload: &Upload) -> String {
        let requested = upload
            .field("num_images")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let count = images.count.unwrap_or(requested);
        let mut data = Vec::new();
        for position in 1..=count {
            script.next_id += 1;
            let id = script.next_id;
            let safe = !images.unsafe_at.contains(&position);
            let url = safe.then(|| {
                let name = format!("out{id}.png");
                let fault = images
                    .faults
                    .iter()
                    .find(|(p, _)| *p == position)
                    .map(|(_, f)| *f);
                let bytes = images::png(16 + (id % 16) as u32, 16, 1_000_000 + id);
                script.files.insert(
                    name.clone(),
                    StoredFile {
                        bytes,
                        fault,
                        fetches: 0,
                    },
                );
                format!("{}/files/{name}", self.base)
            });
            data.push(json!({
                "url": url,
                "prompt": upload.field("prompt").unwrap_or_default(),
                "resolution": "1024x1024",
                "seed": 1000 + id,
                "is_image_safe": safe,
                "style_type": "GENERAL",
            }));
        }
        if images.envelope {
            json!({"code": 200, "message": "success", "data": data}).to_string()
        } else {
            json!({"created": CREATED, "data": data}).to_string()
        }
    }
}

fn respond(status: u16, headers: &[(String, String)], body: String) -> Response {
    let mut builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    let mut has_type = false;
    for (name, value) in headers {
        has_type |= name.eq_ignore_ascii_case("content-type");
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !has_type && body.trim_start().starts_with(['{', '[']) {
        builder = builder.header("content-type", "application/json");
    }
    builder.body(Body::from(body)).unwrap()
}

async fn remix(
    State(inner): State<Arc<Inner>>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    answer_upload(&inner, (String::new(), operation), &headers, multipart).await
}

async fn remix_via(
    State(inner): State<Arc<Inner>>,
    Path((tag, operation)): Path<(String, String)>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    answer_upload(&inner, (tag, operation), &headers, multipart).await
}

async fn answer_upload(
    inner: &Inner,
    (via, operation): (String, String),
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let mut upload = Upload {
        operation,
        files: Vec::new(),
        at: Instant::now(),
        via,
        authorization: header(headers, "authorization"),
        api_key: header(headers, "api-key"),
        accept: header(headers, "accept"),
        content_type: header(headers, "content-type"),
        file_name: None,
        image_type: None,
        sha256: String::new(),
        len: 0,
        image_parts: 0,
        fields: Vec::new(),
        parse_error: None,
        status: 0,
        body: String::new(),
        answered_at: None,
    };
    read_form(multipart, &mut upload).await;
    let images = upload
        .field("num_images")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let in_flight = InFlight::start(inner, images);
    let planned = inner.plan(&upload);
    upload.status = planned.status;
    upload.body.clone_from(&planned.body);
    let index = {
        let mut script = inner.script.lock().unwrap();
        script
            .requests
            .push(format!("POST /v1/ideogram-v3/{}", upload.operation));
        script.uploads.push(upload);
        script.uploads.len() - 1
    };
    if !planned.delay.is_zero() {
        tokio::time::sleep(planned.delay).await;
    }
    // When the client dies during the delay the server may drop this future: the answer is
    // then never marked as handed over.
    inner.script.lock().unwrap().uploads[index].answered_at = Some(Instant::now());
    drop(in_flight);
    respond(planned.status, &planned.headers, planned.body)
}

async fn file(State(inner): State<Arc<Inner>>, Path(name): Path<String>) -> Response {
    let latency = inner
        .script
        .lock()
        .unwrap()
        .latency
        .as_mut()
        .map_or(Duration::ZERO, Latency::next);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (bytes, fault, fetches) = {
        let mut script = inner.script.lock().unwrap();
        script.requests.push(format!("GET /files/{name}"));
        let Some(stored) = script.files.get_mut(&name) else {
            return respond(404, &[], json!({"error": "no such file"}).to_string());
        };
        stored.fetches += 1;
        (stored.bytes.clone(), stored.fault, stored.fetches)
    };
    match fault {
        Some(FileFault::NotFound) => {
            return respond(404, &[], json!({"error": "expired"}).to_string());
        }
        Some(FileFault::FailOnce) if fetches == 1 => {
            return respond(500, &[], json!({"error": "try again"}).to_string());
        }
        Some(FileFault::NotImage) => {
            let headers = [("content-type".to_string(), "image/png".to_string())];
            return respond(200, &headers, "this is not an image at all".into());
        }
        Some(FileFault::SlowOnce(d)) if fetches == 1 => tokio::time::sleep(d).await,
        _ => {}
    }
    ([(axum::http::header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

/// Records a hostile route's request line.
fn note(inner: &Inner, line: &str) {
    inner.script.lock().unwrap().requests.push(line.to_string());
}

/// `{base}/hostile/...`: outputs that never end or never arrive, for answers a test writes
/// itself (`Reply::status(200, ...)` naming these URLs).
impl FakeApi {
    /// A URL whose body is a PNG signature followed by zeros, fast and forever.
    pub fn endless_url(&self) -> String {
        format!("{}/hostile/endless", self.inner.base)
    }

    /// A URL whose body is a PNG signature, then 16 bytes every 100 ms, forever.
    pub fn trickle_url(&self) -> String {
        format!("{}/hostile/trickle", self.inner.base)
    }

    /// A URL that redirects to itself.
    pub fn loop_url(&self) -> String {
        format!("{}/hostile/loop", self.inner.base)
    }

    /// How many requests `path` (e.g. `/hostile/loop`) received.
    pub fn hits(&self, path: &str) -> usize {
        let line = format!("GET {path}");
        self.requests().iter().filter(|r| **r == line).count()
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

async fn endless(State(inner): State<Arc<Inner>>) -> Response {
    note(&inner, "GET /hostile/endless");
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(PNG_SIGNATURE.to_vec())]);
    let zeros = futures_util::stream::repeat_with(|| Ok(vec![0u8; 64 * 1024]));
    let body = Body::from_stream(futures_util::StreamExt::chain(first, zeros));
    ([(axum::http::header::CONTENT_TYPE, "image/png")], body).into_response()
}

async fn trickle(State(inner): State<Arc<Inner>>) -> Response {
    note(&inner, "GET /hostile/trickle");
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(PNG_SIGNATURE.to_vec())]);
    let drip = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok(vec![0u8; 16]), ()))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, drip));
    ([(axum::http::header::CONTENT_TYPE, "image/png")], body).into_response()
}

async fn redirect_loop(State(inner): State<Arc<Inner>>) -> Response {
    note(&inner, "GET /hostile/loop");
    let headers = [("location".to_string(), "/hostile/loop".to_string())];
    respond(302, &headers, String::new())
}

async fn fallback(State(inner): State<Arc<Inner>>, method: Method, uri: Uri) -> Response {
    inner
        .script
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {}", uri.path()));
    respond(404, &[], json!({"error": "not found"}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(fake: &FakeApi, auth: (&str, String), num_images: &str) -> reqwest::Response {
        let image = reqwest::multipart::Part::bytes(images::png(8, 8, 1))
            .file_name("t.png")
            .mime_str("image/png")
            .unwrap();
        let form = reqwest::multipart::Form::new()
            .part("image", image)
            .text("prompt", "p")
            .text("num_images", num_images.to_string())
            .text("style_codes", "AAAAAAAA")
            .text("style_codes", "BBBBBBBB");
        reqwest::Client::new()
            .post(fake.endpoint())
            .header("Accept", "application/json")
            .header(auth.0, auth.1)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn fake_speaks_the_protocol() {
        let fake = FakeApi::start(Mode::Kkiai);
        fake.push_reply(Reply::status(429, "{}").header("Retry-After", "1"));
        let bearer = ("Authorization", format!("Bearer {API_KEY}"));
        let refused = post(&fake, ("Authorization", "Bearer nope".into()), "1").await;
        assert_eq!(refused.status(), 401);
        let limited = post(&fake, bearer.clone(), "1").await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "1");
        let ok = post(&fake, bearer, "2").await;
        assert_eq!(ok.status(), 200);
        let body: Value = ok.json().await.unwrap();
        let items = body["data"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        let url = items[0]["url"].as_str().unwrap();
        let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
        assert_eq!(images::format_of(&bytes), Some("png"));
        assert_eq!(fake.fetches(url), 1);
        let uploads = fake.uploads();
        assert_eq!(uploads.len(), 3);
        let last = &uploads[2];
        assert_eq!(last.file_name.as_deref(), Some("t.png"));
        assert_eq!(last.sha256, sha256(&images::png(8, 8, 1)));
        let codes: Vec<&str> = last
            .fields
            .iter()
            .filter(|(n, _)| n == "style_codes")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(codes, ["AAAAAAAA", "BBBBBBBB"]);
    }

    #[tokio::test]
    async fn ideogram_mode_wants_api_key_header() {
        let fake = FakeApi::start(Mode::Ideogram);
        let bearer = post(&fake, ("Authorization", format!("Bearer {API_KEY}")), "1").await;
        assert_eq!(bearer.status(), 401);
        let ok = post(&fake, ("Api-Key", API_KEY.to_string()), "1").await;
        assert_eq!(ok.status(), 200);
    }
}
