//! SPEC.md, The outbox: "when `output.gallery` is on, remixd writes the gallery …
//! `outbox/index.html`, `index-2.html`, … (every job, newest first, 100 a page), the same for
//! each subfolder's jobs at `outbox/SUBDIR/index.html` …, and `quarantine/index.html`. … hold
//! no `<script>`, and HTML-escape all text." Checked in a real headless Chromium: the DOM it
//! builds, the links, the images it decodes and a screenshot of what a person sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::{Daemon, run_to_end};
use crate::env::{API_KEY, TestEnv, walk_paths};
use crate::images::picture;

const HOSTILE_PROMPT: &str = "<script>alert(1)</script> \"><img src=x onerror=alert(2)>";

/// Headless Chromium, each run with a fresh profile.
struct Browser {
    bin: PathBuf,
}

impl Browser {
    fn find() -> Self {
        let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        Self {
            bin: bin.expect(
                "chromium is missing: the gallery tests need a real browser \
                 (Debian: apt-get install chromium)",
            ),
        }
    }

    /// Runs Chromium on `url` with `extra` flags; returns its stdout.
    fn run(&self, extra: &[&str], url: &str) -> String {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromium");
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
            text
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("chromium did not finish within 120 s on {url}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reader.join().unwrap()
    }

    /// The DOM after load, lazy images given time to load.
    fn dom(&self, page: &Path) -> String {
        let dom = self.run(
            &["--virtual-time-budget=5000", "--dump-dom"],
            &file_url(page),
        );
        assert!(
            dom.contains("</html>"),
            "no DOM from chromium for {}: {dom}",
            page.display()
        );
        dom
    }

    fn screenshot(&self, page: &Path, out: &Path, size: &str) {
        self.run(
            &[
                "--virtual-time-budget=5000",
                &format!("--window-size={size}"),
                &format!("--screenshot={}", out.display()),
            ],
            &file_url(page),
        );
        assert!(
            out.is_file(),
            "chromium wrote no screenshot of {}",
            page.display()
        );
    }

    /// Loads `page` in an iframe of a test-only wrapper (outside the outbox: the pages
    /// themselves hold no script) that reports, for every `<img>` of the page, the
    /// `naturalWidth` its file decodes to, and for the screenshot the number of distinct
    /// colours in it.
    fn probe(&self, page: &Path, screenshot: &Path) -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("probe.html");
        std::fs::write(
            &wrapper,
            PROBE_HTML
                .replace("PAGE_URL", &file_url(page))
                .replace("SHOT_URL", &file_url(screenshot)),
        )
        .unwrap();
        let dom = self.run(
            &[
                "--allow-file-access-from-files",
                "--virtual-time-budget=10000",
                "--dump-dom",
            ],
            &file_url(&wrapper),
        );
        let start = dom.find("<pre id=\"result\">").expect("probe result") + 17;
        let text = &dom[start..start + dom[start..].find("</pre>").unwrap()];
        let mut probe = Probe::default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            match parts.as_slice() {
                ["img", src, width] => probe.images.push((unescape(src), width.parse().unwrap())),
                ["shot", w, h, colours] => {
                    probe.shot = Some((
                        w.parse().unwrap(),
                        h.parse().unwrap(),
                        colours.parse().unwrap(),
                    ));
                }
                ["done"] => probe.done = true,
                [other] if other.starts_with("error") => panic!("the probe page failed: {other}"),
                _ => {}
            }
        }
        assert!(probe.done, "the probe page did not finish: {text}");
        probe
    }
}

#[derive(Debug, Default)]
struct Probe {
    done: bool,
    /// (src as written in the page, naturalWidth).
    images: Vec<(String, u32)>,
    /// The screenshot's width, height and distinct colours.
    shot: Option<(u32, u32, u32)>,
}

const PROBE_HTML: &str = r#"<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="page" src="PAGE_URL" width="1200" height="900"></iframe>
<script>
const lines = [];
let waiting = 0;
const report = () => { if (waiting === 0) document.getElementById('result').textContent = lines.join('\n') + '\ndone'; };
const load = (src, done) => {
  waiting += 1;
  const img = new Image();
  img.onload = img.onerror = () => { done(img); waiting -= 1; report(); };
  img.src = src;
};
window.addEventListener('load', () => {
  document.getElementById('result').textContent = 'started';
  for (const el of document.getElementById('page').contentDocument.querySelectorAll('img')) {
    const src = el.getAttribute('src');
    load(el.src, (img) => lines.push(['img', src, img.naturalWidth].join('\t')));
  }
  load('SHOT_URL', (shot) => {
    const canvas = document.createElement('canvas');
    canvas.width = shot.naturalWidth; canvas.height = shot.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(shot, 0, 0);
    try {
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      const colours = new Set();
      for (let i = 0; i < px.length; i += 4) colours.add((px[i] >> 3) << 10 | (px[i + 1] >> 3) << 5 | px[i + 2] >> 3);
      lines.push(['shot', canvas.width, canvas.height, colours.size].join('\t'));
    } catch (e) { lines.push('error ' + e); }
  });
});
</script></body></html>"#;

fn file_url(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            url.push(b as char);
        } else {
            let _ = write!(url, "%{b:02X}");
        }
    }
    url
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every `attr="…"` value in `html`, unescaped.
fn attributes(html: &str, attr: &str) -> Vec<String> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let start = at + needle.len();
            unescape(&html[start..start + html[start..].find('"').unwrap()])
        })
        .collect()
}

/// Every link and image source of the page file `page` names an existing file or folder.
fn assert_links_resolve(page: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let html = std::fs::read_to_string(page).unwrap();
    let dir = page.parent().unwrap();
    let mut links = attributes(&html, "href");
    links.extend(attributes(&html, "src"));
    for link in &links {
        assert!(
            !link.contains("://") && !link.starts_with('/'),
            "{}: {link} is not a relative link",
            page.display()
        );
        let target = dir.join(std::ffi::OsStr::from_bytes(&percent_decode(link)));
        assert!(
            target.exists(),
            "{}: {link} leads nowhere ({})",
            page.display(),
            target.display()
        );
    }
    links.len()
}

/// The job ids of the rows of a DOM, in order.
fn job_ids(dom: &str) -> Vec<String> {
    attributes(dom, "id")
        .into_iter()
        .filter_map(|id| id.strip_prefix("job-").map(str::to_owned))
        .collect()
}

/// `(job id, job folder)` of every published job, newest first by `completed_at`.
fn published(env: &TestEnv) -> Vec<(String, PathBuf, Value)> {
    let mut jobs: Vec<(String, PathBuf, Value)> = walk_paths(&env.outbox)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "metadata.json"))
        .map(|p| {
            let meta: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (
                meta["job_id"].as_str().unwrap().to_owned(),
                p.parent().unwrap().to_path_buf(),
                meta,
            )
        })
        .collect();
    jobs.sort_by(|a, b| {
        let key = |m: &Value| m["timings"]["completed_at"].as_str().unwrap().to_owned();
        (key(&b.2), &b.0).cmp(&(key(&a.2), &a.0))
    });
    jobs
}

fn run_once(env: &TestEnv) {
    let config = env.config_path.to_string_lossy().into_owned();
    let (status, stdout, stderr) =
        run_to_end(env.root(), &["run", "-c", &config, "--once"], Some(API_KEY));
    assert_eq!(status.code(), Some(0), "remixd --once\n{stdout}\n{stderr}");
    assert!(!stdout.contains(API_KEY));
}

/// Where the committed screenshot lives (README shows it).
fn fixture_screenshot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gallery.png")
}

/// SPEC.md, The outbox: "Each row shows the job's original beside its outputs through
/// relative links to the job's own files", "the same for each subfolder's jobs at
/// `outbox/SUBDIR/index.html`", "hold no `<script>`, and HTML-escape all text". A known
/// workload through the real daemon, then the pages in Chromium: every job with its
/// pictures decoded, hostile text shown as text, every link leading to a file.
#[test]
fn gallery_shows_every_job_beside_its_outputs_in_a_real_browser() {
    let browser = Browser::find();
    let env = TestEnv::new();
    env.config()
        .set("defaults.num_images", "2")
        .set("defaults.prompt", "\"a watercolor of the same scene\"")
        .set("output.gallery_delay", "100ms")
        .write();
    env.drop_file("harbour.png", picture(96, 64, 1));
    env.drop_file("team/<b>.png", picture(64, 96, 2));
    env.drop_file("team/<b>.png.txt", HOSTILE_PROMPT);
    env.drop_file("team/street.png", picture(80, 80, 3));
    env.drop_file("team/deep/leaf.png", picture(72, 54, 4));
    env.drop_file("notes.doc", "not an image");
    run_once(&env);

    let jobs = published(&env);
    assert_eq!(jobs.len(), 4, "{}", env.describe());
    let index = env.outbox.join("index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "a script in the page:\n{html}"
    );
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
    let dom = browser.dom(&index);
    let expected: Vec<String> = jobs.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(job_ids(&dom), expected, "every job once, newest first");

    // The hostile prompt and file name are text: no element was made from them.
    assert!(
        dom.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt; \"&gt;&lt;img src=x onerror=alert(2)&gt;"
        ),
        "{dom}"
    );
    assert!(dom.contains("original: &lt;b&gt;.png"), "{dom}");
    assert!(
        !dom.contains("<script")
            && !dom.contains("<b>")
            && !dom.contains("onerror=\"")
            && !dom.contains("src=\"x\""),
        "{dom}"
    );

    // Every picture of every job is on the page, and decodes.
    let shot = env.root().join("gallery.png");
    browser.screenshot(&index, &shot, "1000,1100");
    let probe = browser.probe(&index, &shot);
    for (_, dir, meta) in &jobs {
        let rel = dir.strip_prefix(&env.outbox).unwrap().to_str().unwrap();
        let mut files = vec![meta["source"]["file"].as_str().unwrap().to_owned()];
        files.extend(
            meta["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["file"].as_str().unwrap().to_owned()),
        );
        assert_eq!(files.len(), 3);
        for file in files {
            let src = format!("{rel}/{file}");
            let found = probe
                .images
                .iter()
                .find(|(s, _)| percent_decode(s) == src.as_bytes());
            assert!(
                found.is_some_and(|(_, width)| *width > 0),
                "{src} is not shown decoded: {:?}",
                probe.images
            );
        }
    }
    assert_eq!(probe.images.len(), 12, "{:?}", probe.images);
    let (w, h, colours) = probe.shot.unwrap();
    assert!(
        w >= 1000 && h >= 1000 && colours > 50,
        "the screenshot looks blank: {w}x{h}, {colours} colours"
    );

    // Per-subfolder pages hold exactly that folder's jobs, and the filter list leads there.
    for (sub, count) in [("team", 2), ("team/deep", 1)] {
        let page = env.outbox.join(sub).join("index.html");
        let ids = job_ids(&browser.dom(&page));
        let want: Vec<String> = jobs
            .iter()
            .filter(|(_, _, m)| m["source"]["subdir"] == sub)
            .map(|(id, ..)| id.clone())
            .collect();
        assert_eq!((ids.len(), &ids), (count, &want), "{sub}/index.html");
        assert!(
            html.contains(&format!("href=\"{sub}/index.html\"")),
            "no filter link to {sub}"
        );
        assert_links_resolve(&page);
    }
    assert!(assert_links_resolve(&index) > 20);
    assert!(env.outbox.join(".remixd-gallery/style.css").is_file());

    if std::env::var_os("REMIXD_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&shot, fixture_screenshot()).unwrap();
    }
}

/// SPEC.md, The outbox: "every job, newest first, 100 a page". 250 jobs: three pages that
/// together hold each job exactly once, newest first, linked newer ↔ older.
#[test]
fn gallery_pages_hold_100_jobs_each_at_250_jobs() {
    let browser = Browser::find();
    let env = TestEnv::new();
    env.config()
        .set("defaults.prompt", "\"p\"")
        .set("limits.concurrency", "8")
        .write();
    for n in 0..250 {
        env.drop_file(&format!("batch/img-{n:03}.png"), picture(8, 8, n));
    }
    run_once(&env);
    let jobs = published(&env);
    assert_eq!(jobs.len(), 250);
    let mut shown = Vec::new();
    let mut sizes = Vec::new();
    for page in ["index.html", "index-2.html", "index-3.html"] {
        let path = env.outbox.join(page);
        let dom = browser.dom(&path);
        let ids = job_ids(&dom);
        sizes.push(ids.len());
        shown.extend(ids);
        assert_links_resolve(&path);
    }
    assert!(!env.outbox.join("index-4.html").exists());
    // The newest page holds the jobs since the last full hundred; older pages are full.
    assert_eq!(sizes, [50, 100, 100]);
    let expected: Vec<String> = jobs.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(shown, expected, "every job exactly once, newest first");
    let first = std::fs::read_to_string(env.outbox.join("index.html")).unwrap();
    let last = std::fs::read_to_string(env.outbox.join("index-3.html")).unwrap();
    assert!(
        first.contains("rel=\"next\" href=\"index-2.html\"") && !first.contains("rel=\"prev\"")
    );
    assert!(last.contains("rel=\"prev\" href=\"index-2.html\"") && !last.contains("rel=\"next\""));
    let sub = std::fs::read_to_string(env.outbox.join("batch/index-3.html")).unwrap();
    assert_eq!(job_ids(&sub).len(), 100);
}

/// SPEC.md, The outbox: "… and `quarantine/index.html` (reasons and messages)". One row per
/// quarantined job: the original's thumbnail when it is an image, the reason, the message,
/// a link to `error.json`, and how to requeue.
#[test]
fn quarantine_page_shows_reason_message_and_how_to_requeue() {
    let browser = Browser::find();
    let env = TestEnv::new();
    env.config().write();
    env.drop_file("no-prompt.png", picture(40, 30, 7));
    env.drop_file("x/<b>.png", "not really a png");
    env.drop_file("empty.png", "");
    run_once(&env);
    let page = env.quarantine.join("index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.to_ascii_lowercase().contains("<script"));
    let dom = browser.dom(&page);
    let errors: Vec<Value> = walk_paths(&env.quarantine)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "error.json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{}", env.describe());
    let mut ids = job_ids(&dom);
    ids.sort();
    let mut want: Vec<String> = errors
        .iter()
        .map(|e| e["job_id"].as_str().unwrap().to_owned())
        .collect();
    want.sort();
    assert_eq!(ids, want);
    for error in &errors {
        for text in [
            error["reason"].as_str().unwrap(),
            error["message"].as_str().unwrap(),
        ] {
            let escaped = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(dom.contains(&escaped), "{text:?} not on the page:\n{dom}");
        }
    }
    for reason in ["missing_prompt", "unsupported_format", "empty_file"] {
        assert!(dom.contains(reason), "{reason}");
    }
    assert!(dom.contains("remixd requeue"), "no requeue hint");
    assert!(dom.contains("original: &lt;b&gt;.png") && !dom.contains("<b>"));
    assert_eq!(
        attributes(&html, "href")
            .iter()
            .filter(|h| h.ends_with("/error.json"))
            .count(),
        3
    );
    assert_links_resolve(&page);
    // Only the real image gets a thumbnail, and it decodes.
    let shot = env.root().join("q.png");
    browser.screenshot(&page, &shot, "900,900");
    let probe = browser.probe(&page, &shot);
    assert_eq!(probe.images.len(), 1, "{:?}", probe.images);
    assert!(probe.images[0].0.ends_with("/no-prompt.png") && probe.images[0].1 == 40);
}

/// SPEC.md, The outbox: pages are "replaced atomically within `output.gallery_delay` of a
/// job's end". Issue 12: "With several processes on one inbox, every finished job appears on
/// the pages within the delay, whichever process finished it, and no process's rewrite drops
/// another's jobs." Two live processes share the inbox; each finishes jobs and rewrites the
/// pages; the pages hold every job while both still run.
#[test]
fn two_processes_finishing_jobs_together_both_show_on_the_pages() {
    let browser = Browser::find();
    let env = TestEnv::new();
    let config = env
        .config()
        .set("defaults.prompt", "\"p\"")
        .set("limits.concurrency", "1")
        .set("output.gallery_delay", "300ms")
        .write();
    let mut a = Daemon::start_config(&env, &config, &[]);
    let mut b = Daemon::start_config(&env, &config, &[]);
    a.wait_ready();
    b.wait_ready();
    let files: Vec<String> = (0..16).map(|n| format!("shared/pic-{n:02}.png")).collect();
    for (n, file) in files.iter().enumerate() {
        env.drop_file(file, picture(16, 16, 100 + n as u64));
    }
    let done = |d: &Daemon| d.events_named("job.completed").len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done(&a) + done(&b) < files.len() {
        assert!(
            Instant::now() < deadline,
            "jobs did not end\n{}\n{}",
            a.dump(),
            b.dump()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        done(&a) > 0 && done(&b) > 0,
        "both processes must finish jobs for this test to mean anything: {} and {}",
        done(&a),
        done(&b)
    );
    // Within the delay (plus a margin for a loaded machine), while both still run.
    std::thread::sleep(Duration::from_millis(300 + 1500));
    let jobs = published(&env);
    let expected: Vec<String> = jobs.iter().map(|(id, ..)| id.clone()).collect();
    for page in [
        env.outbox.join("index.html"),
        env.outbox.join("shared/index.html"),
    ] {
        assert_eq!(job_ids(&browser.dom(&page)), expected, "{}", page.display());
        assert_links_resolve(&page);
    }
    a.stop();
    b.stop();
    assert_eq!(
        job_ids(&std::fs::read_to_string(env.outbox.join("index.html")).unwrap()),
        expected
    );
}
