//! Errors the LLM gateway answers itself, in the provider's own error shape (OpenAI's
//! `{"error":{...}}` or Anthropic's `{"type":"error","error":{...}}`), so SDKs raise their usual
//! exceptions (RateLimitError, BadRequestError, ...).
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::proxy::upstream::Body;

#[derive(Debug, Clone)]
pub struct LlmError {
    pub status: StatusCode,
    /// OpenAI-style error type (`invalid_request_error`, `rate_limit_exceeded`, ...).
    pub kind: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// The rule that decided, for audit.
    pub rule: Option<String>,
}

impl LlmError {
    pub fn new(status: StatusCode, kind: &'static str, message: String) -> Self {
        Self { status, kind, message, retry_after: None, rule: None }
    }

    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// Anthropic's name for the same kind of error.
    fn anthropic_kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 413 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        }
    }

    pub fn response(&self, anthropic: bool) -> Response<Body> {
        let body = if anthropic {
            json!({"type": "error", "error": {"type": self.anthropic_kind(), "message": self.message}})
        } else {
            json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.kind}})
        };
        let mut r =
            Response::new(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed());
        *r.status_mut() = self.status;
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }

    /// The same error as a final SSE event, for a stream cut off mid-way.
    pub fn sse_event(&self, anthropic: bool) -> Bytes {
        if anthropic {
            let e =
                json!({"type": "error", "error": {"type": self.anthropic_kind(), "message": self.message}});
            Bytes::from(format!("event: error\ndata: {e}\n\n"))
        } else {
            let e = json!({"error": {"message": self.message, "type": self.kind, "code": self.kind}});
            Bytes::from(format!("data: {e}\n\ndata: [DONE]\n\n"))
        }
    }
}
