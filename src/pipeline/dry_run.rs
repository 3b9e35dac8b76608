//! The dry-run provider (`api.provider: dry-run` or `--dry-run`): instead of calling the API,
//! `num_images` copies of the input become the outputs, and an answer saying so is recorded
//! like the API's, so the rest of the job (publish, metadata) runs as it would for real.

use std::time::SystemTime;

use tracing::info;

use super::ctx::{Ctx, Job};
use crate::api::{Answer, OutputItem};
use crate::events;
use crate::fsx::{self, Context, FsError};
use crate::image_info::ImageInfo;

/// Makes the copies and returns the answer that describes them.
pub(super) fn run(ctx: &Ctx, job: &mut Job, image: ImageInfo) -> Result<Answer, FsError> {
    let files = job.dir.files();
    let source = files.join(job.rec.source.file_os());
    job.rec.timings.submitted_at = Some(SystemTime::now());
    let request = job.rec.request.as_ref();
    let n = request.map_or(1, |r| r.num_images);
    let prompt = request.and_then(|r| {
        r.fields
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.clone())
    });
    let mut items = Vec::new();
    for i in 1..=usize::from(n) {
        let name = format!(
            "{}-{}-{i}.{}",
            job.rec.source.stem(),
            job.rec.operation(),
            image.format.ext()
        );
        let dest = files.join(&name);
        fsx::copy_durable(&source, &dest).context("writing a dry-run output", &dest)?;
        items.push(OutputItem {
            url: None,
            prompt: prompt.clone(),
            resolution: Some(format!("{}x{}", image.width, image.height)),
            seed: Some(0),
            is_image_safe: true,
            style_type: None,
            upscaled_resolution: None,
        });
    }
    ctx.gate.count_images(u32::from(n));
    ctx.metrics.images(u64::from(n));
    let raw = serde_json::json!({
        "created": crate::clock::now_rfc3339(),
        "data": items,
    });
    info!(
        event = events::JOB_RESPONDED,
        http_status = 200u16,
        api_ms = 0u64,
        images = n,
        "dry-run: made copies of the input instead of calling the API"
    );
    Ok(Answer {
        http_status: 200,
        raw,
        created: None,
        items,
    })
}
