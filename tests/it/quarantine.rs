//! Every per-file quarantine reason of SPEC.md's table, each checked through `error.json`,
//! the files kept, and what the API saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::asserts::{assert_nothing_lost, assert_published, assert_quarantined};
use crate::daemon::start_with_fake;
use crate::env::{TestEnv, sha256};
use crate::fake_api::{FileFault, Reply};
use crate::images;

/// SPEC.md, The quarantine: `unsupported_format` — "not PNG/JPEG/WebP by its bytes, or not
/// an image file at all"; The inbox: "any other file is quarantined (unsupported_format)".
#[test]
fn non_images_are_unsupported_format() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("notes.png", "this is text pretending to be a PNG");
    env.drop_file(
        "doc.pdf",
        "%PDF-1.4\n%\u{e2}\u{e3}\n1 0 obj\n<<>>\nendobj\n",
    );
    d.wait_quarantined("notes.png", "unsupported_format");
    d.wait_quarantined("doc.pdf", "unsupported_format");
    assert_quarantined(&env, "notes.png", "unsupported_format");
    assert_quarantined(&env, "doc.pdf", "unsupported_format");
    assert!(fake.uploads().is_empty());
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `too_large` — "over limits.max_image_bytes"; the sidecar goes
/// along.
#[test]
fn image_over_the_size_limit_is_too_large() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[("limits.max_image_bytes", "1000")]);
    env.drop_file("big.txt", "too big");
    env.drop_file("big.png", images::png(64, 64, 200));
    d.wait_quarantined("big.png", "too_large");
    let q = assert_quarantined(&env, "big.png", "too_large");
    assert_eq!(q.error["attempts"], 0);
    assert!(fake.uploads().is_empty());
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `empty_file` — "zero bytes".
#[test]
fn zero_byte_image_is_empty_file() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("blank.png", b"");
    d.wait_quarantined("blank.png", "empty_file");
    assert_quarantined(&env, "blank.png", "empty_file");
    assert!(fake.uploads().is_empty());
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "A symlink ... is never opened or followed: the entry itself is moved
/// to the quarantine, never its target."
#[test]
fn symlink_itself_is_quarantined_and_its_target_untouched() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let target = env.root().join("elsewhere/real.png");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let png = images::png(20, 20, 201);
    std::fs::write(&target, &png).unwrap();
    env.drop_symlink("link.png", &target);
    d.wait_quarantined("link.png", "not_regular_file");
    assert_quarantined(&env, "link.png", "not_regular_file");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        png,
        "the symlink's target was changed"
    );
    assert!(fake.uploads().is_empty(), "the target was uploaded");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: a FIFO is never opened; it is quarantined `not_regular_file`. The
/// daemon keeps working afterwards (it did not block opening the pipe).
#[test]
fn fifo_is_quarantined_without_being_opened() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_fifo("pipe.png");
    d.wait_quarantined("pipe.png", "not_regular_file");
    assert_quarantined(&env, "pipe.png", "not_regular_file");
    env.drop_file("after.txt", "still alive");
    env.drop_file("after.png", images::png(20, 20, 202));
    d.wait_completed("after.png");
    assert_published(&env, "after.png");
    assert_eq!(fake.uploads().len(), 1);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "An image with no prompt from anywhere is quarantined
/// (missing_prompt)".
#[test]
fn image_without_any_prompt_is_missing_prompt() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("mute.png", images::png(20, 20, 203));
    d.wait_quarantined("mute.png", "missing_prompt");
    let q = assert_quarantined(&env, "mute.png", "missing_prompt");
    assert!(q.error["sidecar"].is_null());
    assert!(fake.uploads().is_empty());
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `invalid_sidecar` — "bad YAML/JSON, unknown key, bad value".
#[test]
fn broken_sidecars_are_invalid_sidecar() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let cases = [
        ("badyaml", "yaml", "prompt: [unclosed\n"),
        ("unknown", "yaml", "prompt: fine\ncolour: red\n"),
        ("toomany", "yaml", "prompt: fine\nnum_images: 12\n"),
        ("badjson", "json", "{\"prompt\": \"fine\",,}"),
    ];
    for (i, (stem, ext, text)) in cases.iter().enumerate() {
        env.drop_file(&format!("{stem}.{ext}"), text);
        env.drop_file(&format!("{stem}.png"), images::png(20, 20, 210 + i as u64));
    }
    for (stem, ext, _) in cases {
        let image = format!("{stem}.png");
        d.wait_quarantined(&image, "invalid_sidecar");
        let q = assert_quarantined(&env, &image, "invalid_sidecar");
        assert_eq!(q.error["sidecar"]["file"], format!("{stem}.{ext}"));
    }
    let message = |stem: &str| {
        assert_quarantined(&env, &format!("{stem}.png"), "invalid_sidecar").error["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        message("unknown").contains("colour"),
        "the message names the unknown key"
    );
    assert!(
        message("toomany").contains("num_images"),
        "the message names the bad field"
    );
    assert!(fake.uploads().is_empty());
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "A sidecar whose image has not come within watch.orphan_after is
/// quarantined (orphan_sidecar)".
#[test]
fn sidecar_without_image_is_orphan_sidecar() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[("watch.orphan_after", "1s")]);
    env.drop_file("lonely.yaml", "prompt: where is my image\n");
    let dropped_at = env.dropped_at("lonely.yaml").at;
    d.wait_quarantined("lonely.yaml", "orphan_sidecar");
    let waited = dropped_at.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "quarantined after only {waited:?}"
    );
    assert_quarantined(&env, "lonely.yaml", "orphan_sidecar");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `rejected_by_api` — "the API refused this request (400 and
/// like)"; `api_error` is the API's error body.
#[test]
fn api_400_is_rejected_by_api() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::status(
        400,
        r#"{"error": "prompt is not allowed here"}"#,
    ));
    env.drop_file("rej.txt", "something");
    env.drop_file("rej.png", images::png(20, 20, 220));
    d.wait_quarantined("rej.png", "rejected_by_api");
    let q = assert_quarantined(&env, "rej.png", "rejected_by_api");
    assert_eq!(q.error["http_status"], 400);
    assert_eq!(q.error["attempts"], 1);
    assert!(
        q.error["api_error"]
            .as_str()
            .unwrap()
            .contains("prompt is not allowed here")
    );
    assert_eq!(fake.uploads().len(), 1, "a refused request is not retried");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `unsafe_content` — "422 safety refusal".
#[test]
fn api_422_is_unsafe_content() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::status(
        422,
        r#"{"error": "Prompt failed the safety check"}"#,
    ));
    env.drop_file("bad.txt", "something");
    env.drop_file("bad.png", images::png(20, 20, 221));
    d.wait_quarantined("bad.png", "unsafe_content");
    let q = assert_quarantined(&env, "bad.png", "unsafe_content");
    assert_eq!(q.error["http_status"], 422);
    assert!(
        q.error["api_error"]
            .as_str()
            .unwrap()
            .contains("safety check")
    );
    assert_eq!(fake.uploads().len(), 1);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `unsafe_content` — "or every output withheld for safety".
#[test]
fn every_output_withheld_is_unsafe_content() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::ok().unsafe_at(&[1, 2]));
    env.drop_file("nsfw.yaml", "prompt: something\nnum_images: 2\n");
    env.drop_file("nsfw.png", images::png(20, 20, 222));
    d.wait_quarantined("nsfw.png", "unsafe_content");
    assert_quarantined(&env, "nsfw.png", "unsafe_content");
    assert_eq!(fake.uploads().len(), 1);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `retries_exhausted` — "transient failures for this job past
/// retry.max_attempts while the API worked for others". Good images keep arriving and
/// succeeding while one image always gets 500.
#[test]
fn one_image_failing_while_others_work_is_retries_exhausted() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(
        &env,
        &[
            ("retry.max_attempts", "3"),
            ("retry.initial_backoff", "200ms"),
        ],
    );
    let bad = images::png(20, 20, 230);
    fake.always_for(
        &sha256(&bad),
        Reply::status(500, r#"{"error": "internal error"}"#),
    );
    env.drop_file("good0.txt", "fine");
    env.drop_file("good0.png", images::png(20, 20, 231));
    d.wait_completed("good0.png");
    env.drop_file("doomed.txt", "never works");
    env.drop_file("doomed.png", &bad);
    let stop = AtomicBool::new(false);
    let fed = std::thread::scope(|s| {
        let feeder = s.spawn(|| {
            let mut n = 1;
            while !stop.load(Ordering::Relaxed) && n <= 25 {
                env.drop_file(&format!("good{n}.txt"), "fine");
                env.drop_file(&format!("good{n}.png"), images::png(20, 20, 231 + n));
                n += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            n
        });
        d.wait_job_end("doomed.png");
        stop.store(true, Ordering::Relaxed);
        feeder.join().unwrap()
    });
    d.wait_quarantined("doomed.png", "retries_exhausted");
    let q = assert_quarantined(&env, "doomed.png", "retries_exhausted");
    assert_eq!(q.error["attempts"], 3);
    assert_eq!(q.error["http_status"], 500);
    assert_eq!(
        fake.uploads_of(&sha256(&bad)).len(),
        3,
        "max_attempts 3 means 3 requests"
    );
    for n in 0..fed {
        let image = format!("good{n}.png");
        d.wait_completed(&image);
        assert_published(&env, &image);
    }
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `download_failed` — "an output could not be fetched or was not an
/// image". The journaled answer is never submitted again.
#[test]
fn unfetchable_outputs_are_download_failed() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let gone = images::png(20, 20, 240);
    let junk = images::png(20, 20, 241);
    fake.always_for(&sha256(&gone), Reply::ok().fault_at(2, FileFault::NotFound));
    fake.always_for(&sha256(&junk), Reply::ok().fault_at(1, FileFault::NotImage));
    env.drop_file("gone.yaml", "prompt: x\nnum_images: 2\n");
    env.drop_file("gone.png", &gone);
    env.drop_file("junk.txt", "y");
    env.drop_file("junk.png", &junk);
    for (image, bytes) in [("gone.png", &gone), ("junk.png", &junk)] {
        d.wait_quarantined(image, "download_failed");
        let q = assert_quarantined(&env, image, "download_failed");
        let ups = fake.uploads_of(&sha256(bytes));
        assert_eq!(
            ups.len(),
            1,
            "{image}: submitted again after its answer came"
        );
        // Outputs already fetched may be kept; they must be what was served.
        let answer = ups[0].response_json();
        for (i, item) in answer["data"].as_array().unwrap().iter().enumerate() {
            let stem = image.trim_end_matches(".png");
            let kept = q.dir.join(format!("{stem}-remix-{}.png", i + 1));
            if kept.exists() {
                let served = fake.file_bytes(item["url"].as_str().unwrap()).unwrap();
                assert!(
                    std::fs::read(&kept).unwrap() == served,
                    "{} differs",
                    kept.display()
                );
            }
        }
    }
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `bad_response` — "not JSON".
#[test]
fn answer_that_is_not_json_is_bad_response() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.set_default(Reply::NotJson);
    env.drop_file("html.txt", "x");
    env.drop_file("html.png", images::png(20, 20, 250));
    d.wait_quarantined("html.png", "bad_response");
    let q = assert_quarantined(&env, "html.png", "bad_response");
    assert_eq!(
        q.error["attempts"],
        fake.uploads().len(),
        "attempts counts requests sent"
    );
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The remote API: a task envelope is recognised and quarantined `bad_response`,
/// naming the task id.
#[test]
fn task_envelope_is_bad_response_naming_the_task() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::Task("T123".into()));
    env.drop_file("async.txt", "x");
    env.drop_file("async.png", images::png(20, 20, 251));
    d.wait_quarantined("async.png", "bad_response");
    let q = assert_quarantined(&env, "async.png", "bad_response");
    assert!(
        q.error["message"].as_str().unwrap().contains("T123"),
        "message: {}",
        q.error["message"]
    );
    assert_eq!(fake.uploads().len(), 1);
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The quarantine: `not_regular_file` — "... or a file with other hard links". The
/// other link, outside the inbox, keeps its content.
#[test]
fn hard_linked_image_is_not_regular_file() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let outside = env.root().join("elsewhere/twin.png");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    let png = images::png(20, 20, 260);
    std::fs::write(&outside, &png).unwrap();
    env.drop_hard_link("twin.png", &outside);
    d.wait_quarantined("twin.png", "not_regular_file");
    assert_quarantined(&env, "twin.png", "not_regular_file");
    assert_eq!(std::fs::read(&outside).unwrap(), png);
    assert!(fake.uploads().is_empty());
    d.stop();
    assert_nothing_lost(&env);
}
