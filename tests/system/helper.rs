//! The system test's helper (tests/system/boot.sh), run inside the container, where there is
//! neither Rust nor jq:
//!
//! - `system_helper serve PORT`: the integration suite's fake Ideogram server
//!   (tests/it/fake_api.rs) answering like the kkiai API on 127.0.0.1:PORT, every request a
//!   success, until killed;
//! - `system_helper png PATH`: writes a small real PNG to drop into the inbox;
//! - `system_helper key`: prints the API key the fake accepts;
//! - `system_helper json-lines EVENT...`: reads log lines on stdin and fails unless every one
//!   is a JSON object and each EVENT named is among their `event`s.
//!
//! Built by `cargo test --test system_helper --no-run`; `cargo test` never runs it
//! (`test = false` in Cargo.toml) because `serve` never ends. Its checks are the system test's.

// The shared harness files hold much this program does not use.
#![allow(dead_code, unused_imports, missing_docs)]
#![allow(clippy::unwrap_used, clippy::doc_markdown)]

#[path = "../it/env.rs"]
mod env;
#[path = "../it/fake_api.rs"]
mod fake_api;
#[path = "../it/images.rs"]
mod images;

use std::io::BufRead;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", port] => serve(port),
        ["png", path] => {
            std::fs::write(path, images::png(64, 48, 11)).map_err(|e| format!("{path}: {e}"))
        }
        ["key"] => {
            print!("{}", env::API_KEY);
            Ok(())
        }
        ["json-lines", events @ ..] => json_lines(events),
        _ => Err("usage: system_helper serve PORT | png PATH | key | json-lines EVENT...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("system_helper: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(port: &str) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|_| format!("not a port: {port}"))?;
    let fake = fake_api::FakeApi::start_on(fake_api::Mode::Kkiai, port);
    println!("fake API listening on {}", fake.url());
    loop {
        std::thread::park();
    }
}

fn json_lines(wanted: &[&str]) -> Result<(), String> {
    let mut seen = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("line {} is not JSON ({e}): {line}", n + 1))?;
        if !value.is_object() {
            return Err(format!("line {} is not a JSON object: {line}", n + 1));
        }
        seen.push(value["event"].as_str().unwrap_or_default().to_owned());
    }
    let missing: Vec<&&str> = wanted
        .iter()
        .filter(|w| !seen.iter().any(|s| s == **w))
        .collect();
    if seen.is_empty() || !missing.is_empty() {
        return Err(format!(
            "{} JSON lines; missing events {missing:?}",
            seen.len()
        ));
    }
    println!("{} JSON lines, events {}", seen.len(), wanted.join(" "));
    Ok(())
}
