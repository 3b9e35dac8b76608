//! The quarantine: `error.json` in a job's folder. The verdict it records is the job's
//! ([`crate::job::verdict`]); moving the folder is shared with the outbox
//! ([`crate::pipeline::publish::move_out`]).

use std::path::Path;

use crate::fsx::{self, Context, FsError};
use crate::job::verdict::ErrorRecord;

/// The name of the error file in a quarantined job's folder.
pub const ERROR_FILE: &str = "error.json";

/// Writes `error.json` durably into the job's files folder.
pub fn write_error(files: &Path, record: &ErrorRecord) -> Result<(), FsError> {
    let path = files.join(ERROR_FILE);
    fsx::write_json(&path, record, crate::secrets::scrub_bytes).context("writing error.json", &path)
}
