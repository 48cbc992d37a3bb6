//! The HTTP transport for the sync client (blocking, via ureq): POST CBOR bodies with a bearer token.

use crate::protocol::{from_cbor, Problem, CBOR};
use crate::sync_client::{Transport, TransportError};
use std::time::Duration;

/// Largest answer the phone will read (a first sync of many visits is the big one).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

pub struct HttpTransport {
    base_url: String,
    agent: ureq::Agent,
}

impl HttpTransport {
    /// `base_url` like `http://127.0.0.1:8080` (no trailing path).
    pub fn new(base_url: &str) -> Self {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    pub fn with_timeout(base_url: &str, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build();
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }
}

impl Transport for HttpTransport {
    fn post(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self
            .agent
            .post(&url)
            .header("content-type", CBOR)
            .header("accept", CBOR);
        if let Some(token) = token {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let mut response = request
            .send(&body[..])
            .map_err(|e| TransportError::Offline(e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| TransportError::Offline(e.to_string()))?;
        if status == 200 {
            return Ok(bytes);
        }
        let problem = from_cbor::<Problem>(&bytes)
            .or_else(|_| serde_json::from_slice::<Problem>(&bytes))
            .unwrap_or_else(|_| Problem {
                code: "http_error".into(),
                message: String::from_utf8_lossy(&bytes).into(),
            });
        Err(match status {
            401 => TransportError::Unauthorized(problem),
            403 => TransportError::Forbidden(problem),
            _ => TransportError::Rejected { status, problem },
        })
    }
}
