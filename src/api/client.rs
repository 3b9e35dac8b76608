//! The HTTP client: one multipart request per attempt, the image streamed from its file.
//!
//! INTERFACE (skeleton): the helper implementing this module keeps the pub items below.

use std::path::Path;

use crate::config::ApiConfig;
use crate::image_info::ImageFormat;
use crate::sidecar::RemixRequest;

use super::Outcome;

/// Talks to one provider's remix endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {}

impl ApiClient {
    /// A client for `config` (never for dry-run).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS set-up).
    pub fn new(config: &ApiConfig) -> Result<Self, reqwest::Error> {
        let _ = config;
        todo!()
    }

    /// `{base_url}/v1/ideogram-v3/remix`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        todo!()
    }

    /// Sends one request: `image` streamed from disk as the `image` part named `file_name`.
    /// Connection errors and timeouts come back as [`Outcome::Transient`].
    pub async fn submit(
        &self,
        image: &Path,
        file_name: &str,
        format: ImageFormat,
        request: &RemixRequest,
    ) -> Outcome {
        let _ = (image, file_name, format, request);
        todo!()
    }

    /// The underlying HTTP client, shared with the downloads.
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        todo!()
    }
}
