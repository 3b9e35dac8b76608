//! A job from inbox to outbox: providers, dry-run, `--once`, subfolders, the answer's
//! shapes, withheld outputs, slow writers, and `metadata.json` matching what was sent.

use std::time::Duration;

use crate::asserts::{assert_nothing_lost, assert_published, assert_request_matches};
use crate::daemon::{Daemon, job_event_names, start_with_fake};
use crate::env::{API_KEY, TestEnv, sha256};
use crate::fake_api::{CREATED, FakeApi, Mode, Reply};
use crate::images;

/// SPEC.md, The remote API (kkiai row: `Authorization: Bearer KEY`; form fields; `Accept`),
/// A job (claim, submit, download, publish), The outbox, Logs (job events).
#[test]
fn kkiai_job_goes_end_to_end() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("cat.txt", "a cat wearing a hat\n");
    let png = images::png(64, 48, 1);
    env.drop_file("cat.png", &png);
    let end = d.wait_completed("cat.png");

    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1, "one upload: {uploads:#?}");
    let up = &uploads[0];
    assert_eq!(
        up.authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert!(
        up.accept
            .as_deref()
            .is_some_and(|a| a.contains("application/json"))
    );
    assert!(
        up.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("multipart/form-data"))
    );
    assert_eq!(up.file_name.as_deref(), Some("cat.png"));
    assert_eq!(up.image_type.as_deref(), Some("image/png"));
    assert_eq!(
        (up.sha256.as_str(), up.len),
        (sha256(&png).as_str(), png.len())
    );
    assert_eq!(up.field("prompt"), Some("a cat wearing a hat"));
    assert_eq!(up.field("num_images"), Some("1"));
    assert_eq!(up.field("rendering_speed"), Some("DEFAULT"));
    // 64x48 is 4:3; SPEC.md, The inbox: "aspect_ratio: auto sends the supported ratio nearest".
    assert_eq!(up.field("aspect_ratio"), Some("4x3"));

    let p = assert_published(&env, "cat.png");
    assert_eq!(p.meta["provider"], "kkiai");
    assert_eq!(p.meta["endpoint"], fake.endpoint());
    assert_eq!(p.meta["attempts"], 1);
    assert_eq!(
        p.meta["response"],
        up.response_json(),
        "response is the API's JSON as received"
    );
    assert_eq!(p.meta["response"]["created"], CREATED);
    assert_request_matches(&p.meta, &up.fields);
    let out = &p.outputs()[0];
    let url = out["url"].as_str().unwrap();
    assert_eq!(
        sha256(&fake.file_bytes(url).unwrap()),
        out["sha256"].as_str().unwrap()
    );
    assert_eq!(fake.fetches(url), 1);

    let job_id = p.meta["job_id"].clone();
    assert_eq!(end["job_id"], job_id);
    assert_eq!(end["outputs"], 1);
    let events = d.events();
    let names = job_event_names(&events, "cat.png");
    for expected in [
        "job.detected",
        "job.claimed",
        "job.submitted",
        "job.responded",
        "job.completed",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} for cat.png: {names:?}"
        );
    }
    for e in events.iter().filter(|e| e["file"] == "cat.png") {
        assert_eq!(e["job_id"], job_id, "job events carry the job id: {e}");
    }
    let responded = d.wait_for_event("job.responded", |e| e["file"] == "cat.png");
    assert_eq!(
        (
            responded["http_status"].as_u64(),
            responded["images"].as_u64()
        ),
        (Some(200), Some(1))
    );
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The remote API: provider `ideogram` authenticates with `Api-Key: KEY`.
#[test]
fn ideogram_provider_sends_api_key_header() {
    let fake = FakeApi::start(Mode::Ideogram);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let mut d = Daemon::start(&env, &[]);
    env.drop_file("dog.txt", "a dog");
    env.drop_file("dog.jpg", images::jpeg(300, 200, 2));
    d.wait_completed("dog.jpg");
    let up = &fake.uploads()[0];
    assert_eq!(up.api_key.as_deref(), Some(API_KEY));
    assert!(
        !up.authorization
            .as_deref()
            .unwrap_or_default()
            .contains(API_KEY),
        "the ideogram provider must not send the key as a bearer token"
    );
    assert_eq!(up.image_type.as_deref(), Some("image/jpeg"));
    assert_eq!(up.field("aspect_ratio"), Some("3x2"));
    let p = assert_published(&env, "dog.jpg");
    assert_eq!(p.meta["provider"], "ideogram");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, Running it: "`--dry-run` ... makes `num_images` copies of the input instead of
/// calling the API" with `"provider": "dry-run"`, `"endpoint": null`; it needs no key.
#[test]
fn dry_run_copies_the_input_and_calls_nothing() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    let mut d = Daemon::start_with_key(&env, &["--dry-run"], None);
    env.drop_file("bird.yaml", "prompt: a bird\nnum_images: 2\n");
    let webp = images::webp(90, 160, 3);
    env.drop_file("bird.webp", &webp);
    d.wait_completed("bird.webp");
    let p = assert_published(&env, "bird.webp");
    assert_eq!(p.meta["provider"], "dry-run");
    assert!(p.meta["endpoint"].is_null());
    assert_eq!(p.output_files(), ["bird-remix-1.webp", "bird-remix-2.webp"]);
    for file in p.output_files() {
        assert!(p.read(&file) == webp, "{file} is not a copy of the input");
    }
    assert!(
        fake.requests().is_empty(),
        "dry-run reached the network: {:?}",
        fake.requests()
    );
    d.stop();
    assert_nothing_lost(&env);
    // "the whole pipeline runs": the remix step is timed like a request (SPEC.md's metadata
    // lists every timing as a time; only provider and endpoint are said to differ).
    let timings = &p.meta["timings"];
    assert!(
        timings["submitted_at"].is_string(),
        "dry-run timings: {timings}"
    );
}

/// SPEC.md, Running it: "`--once` processes what is in the inbox ... waits for those jobs to
/// end in outbox or quarantine, and exits"; exit status 0 after a clean run.
#[test]
fn once_processes_existing_files_and_exits_zero() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    env.drop_file("one.txt", "first");
    env.drop_file("one.png", images::png(32, 32, 4));
    env.drop_file("sub/two.txt", "second");
    env.drop_file("sub/two.png", images::png(32, 32, 5));
    let mut d = Daemon::start(&env, &["--once"]);
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "--once exit status\n{}", d.dump());
    d.assert_logs_clean();
    assert_published(&env, "one.png");
    assert_published(&env, "sub/two.png");
    assert_eq!(fake.uploads().len(), 2);
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "Subfolders are kept: inbox/a/b/x.png lands under outbox/a/b/"; job
/// events name the file relative to the inbox.
#[test]
fn subfolder_image_lands_in_the_same_subfolder() {
    let env = TestEnv::new();
    let (_fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("a/b/x.txt", "deep");
    env.drop_file("a/b/x.png", images::png(40, 40, 6));
    d.wait_completed("a/b/x.png");
    let p = assert_published(&env, "a/b/x.png");
    assert_eq!(p.dir.parent().unwrap(), env.outbox.join("a/b"));
    assert_eq!(p.meta["source"]["subdir"], "a/b");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The remote API: "Proxies may wrap it: {code, message, data: [...]}".
#[test]
fn proxy_envelope_answer_is_published() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::envelope());
    env.drop_file("env.txt", "wrapped");
    env.drop_file("env.png", images::png(20, 20, 7));
    d.wait_completed("env.png");
    let p = assert_published(&env, "env.png");
    assert_eq!(
        p.meta["response"]["code"], 200,
        "response is the envelope as received"
    );
    assert_eq!(p.output_files(), ["env-remix-1.png"]);
    d.stop();
}

/// SPEC.md, The outbox: "an output withheld for safety leaves its number unused" and "keeps
/// its entry with file: null".
#[test]
fn withheld_output_leaves_its_number_unused() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    fake.push_reply(Reply::ok().unsafe_at(&[2]));
    env.drop_file("mix.yaml", "prompt: three of them\nnum_images: 3\n");
    env.drop_file("mix.png", images::png(30, 30, 8));
    d.wait_completed("mix.png");
    let p = assert_published(&env, "mix.png");
    assert_eq!(p.output_files(), ["mix-remix-1.png", "mix-remix-3.png"]);
    assert!(p.outputs()[1]["file"].is_null());
    assert_eq!(p.outputs()[1]["is_image_safe"], false);
    assert_eq!(d.wait_completed("mix.png")["outputs"], 2);
    d.stop();
}

/// SPEC.md, The remote API: `num_images` (1–8); The outbox: one file per output.
#[test]
fn three_images_give_three_distinct_outputs() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("tri.json", r#"{"prompt": "triple", "num_images": 3}"#);
    env.drop_file("tri.png", images::png(30, 30, 9));
    d.wait_completed("tri.png");
    assert_eq!(fake.uploads()[0].field("num_images"), Some("3"));
    let p = assert_published(&env, "tri.png");
    assert_eq!(
        p.output_files(),
        ["tri-remix-1.png", "tri-remix-2.png", "tri-remix-3.png"]
    );
    for out in p.outputs() {
        let served = fake.file_bytes(out["url"].as_str().unwrap()).unwrap();
        assert_eq!(
            out["sha256"],
            sha256(&served),
            "output differs from what was served"
        );
    }
    let mut shas: Vec<&str> = p
        .outputs()
        .iter()
        .map(|o| o["sha256"].as_str().unwrap())
        .collect();
    shas.dedup();
    assert_eq!(shas.len(), 3);
    d.stop();
}

/// SPEC.md, The inbox: "files already there at start are picked up too".
#[test]
fn files_present_at_start_are_picked_up() {
    let fake = FakeApi::start(Mode::Kkiai);
    let env = TestEnv::new();
    env.config().fake(&fake).write();
    env.drop_file("early.txt", "was here first");
    env.drop_file("early.png", images::png(25, 25, 10));
    let mut d = Daemon::start(&env, &[]);
    d.wait_completed("early.png");
    assert_published(&env, "early.png");
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The inbox: "picked up once remixd has seen its size and mtime hold still for
/// watch.settle". A file written in place over 1.5 s (a chunk every 50 ms, settle 200 ms)
/// must be uploaded whole, once.
#[test]
fn slowly_written_file_is_uploaded_whole() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    env.drop_file("slow.txt", "patience");
    let png = images::png(128, 128, 11);
    env.drop_slowly("slow.png", &png, 30, Duration::from_millis(50));
    d.wait_completed("slow.png");
    let uploads = fake.uploads();
    assert_eq!(uploads.len(), 1, "uploaded more than once: {uploads:#?}");
    assert_eq!(
        (uploads[0].len, uploads[0].sha256.clone()),
        (png.len(), sha256(&png))
    );
    let p = assert_published(&env, "slow.png");
    assert_eq!(p.meta["source"]["bytes"], png.len());
    d.stop();
    assert_nothing_lost(&env);
}

/// SPEC.md, The outbox: "`request` is every form field exactly as sent, by its form name";
/// The remote API: enum values sent upper-case, `color_palette` sent as JSON text,
/// `aspect_ratio` not sent when `resolution` is set.
#[test]
fn metadata_request_equals_the_fields_sent() {
    let env = TestEnv::new();
    let (fake, mut d) = start_with_fake(&env, &[]);
    let sidecar = "\
prompt: a lighthouse at dusk
negative_prompt: people
num_images: 2
rendering_speed: turbo
image_weight: 50
seed: 42
resolution: 1024x1024
magic_prompt: on
style_type: realistic
color_palette: {name: PASTEL}
";
    env.drop_file("lh.yaml", sidecar);
    env.drop_file("lh.png", images::png(50, 30, 12));
    d.wait_completed("lh.png");
    let up = &fake.uploads()[0];
    assert_eq!(up.field("prompt"), Some("a lighthouse at dusk"));
    assert_eq!(up.field("negative_prompt"), Some("people"));
    assert_eq!(up.field("num_images"), Some("2"));
    assert_eq!(up.field("rendering_speed"), Some("TURBO"));
    assert_eq!(up.field("image_weight"), Some("50"));
    assert_eq!(up.field("seed"), Some("42"));
    assert_eq!(up.field("resolution"), Some("1024x1024"));
    assert_eq!(up.field("magic_prompt"), Some("ON"));
    assert_eq!(up.field("style_type"), Some("REALISTIC"));
    assert_eq!(
        up.field("aspect_ratio"),
        None,
        "aspect_ratio sent with resolution"
    );
    let palette: serde_json::Value =
        serde_json::from_str(up.field("color_palette").unwrap()).unwrap();
    assert_eq!(palette, serde_json::json!({"name": "PASTEL"}));
    let p = assert_published(&env, "lh.png");
    assert_request_matches(&p.meta, &up.fields);
    d.stop();
}
