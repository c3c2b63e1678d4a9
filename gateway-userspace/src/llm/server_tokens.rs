//! Prompt tokens counted by the model server itself, for budgets that must not trust an
//! estimate: llama.cpp (`POST /apply-template`, then `POST /tokenize`) and vLLM (`POST
//! /tokenize` with the chat messages). Only for providers whose `tokenize` the operator set;
//! one or two extra round trips at admission, bounded by [`TIMEOUT`], falling back to the
//! estimate (and the learned overhead) when the server does not answer.
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value, json};

use super::providers::ProviderState;
use crate::{config::Tokenize, proxy::upstream::Upstream};

/// Longest the server's count may take before admission falls back to the estimate.
pub const TIMEOUT: Duration = Duration::from_millis(1500);
/// Largest answer read from a tokenize endpoint (token ids for a long prompt).
const MAX_ANSWER: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CountError {
    #[error("the request has no messages or prompt to count")]
    Nothing,
    #[error("{0}: {1}")]
    Upstream(&'static str, String),
    #[error("{0} answered without a count")]
    Shape(&'static str),
    #[error("the server did not count within {0:?}")]
    Timeout(Duration),
}

async fn post(
    up: &Upstream,
    p: &ProviderState,
    path: &'static str,
    body: Value,
) -> Result<Value, CountError> {
    let uri = p.url(path).map_err(|e| CountError::Upstream(path, e.to_string()))?;
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed())
        .map_err(|e| CountError::Upstream(path, e.to_string()))?;
    let resp = up.llm.request(req).await.map_err(|e| CountError::Upstream(path, e.to_string()))?;
    if !resp.status().is_success() {
        return Err(CountError::Upstream(path, format!("status {}", resp.status())));
    }
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| CountError::Upstream(path, e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| CountError::Upstream(path, e.to_string()))
}

async fn ask(
    up: &Upstream,
    p: &ProviderState,
    how: Tokenize,
    body: &Map<String, Value>,
    model: &str,
) -> Result<u64, CountError> {
    let messages = body.get("messages").filter(|m| m.is_array());
    let prompt = body.get("prompt").and_then(Value::as_str);
    match how {
        Tokenize::None => Err(CountError::Nothing),
        Tokenize::LlamaCpp => {
            let text = match (messages, prompt) {
                (Some(_), _) => {
                    // The same body as the chat call, so tools and template options count too.
                    let t = post(up, p, "/apply-template", Value::Object(body.clone())).await?;
                    t.get("prompt")
                        .and_then(Value::as_str)
                        .ok_or(CountError::Shape("/apply-template"))?
                        .to_string()
                }
                (None, Some(text)) => text.to_string(),
                (None, None) => return Err(CountError::Nothing),
            };
            let t = post(up, p, "/tokenize", json!({"content": text, "add_special": true})).await?;
            t.get("tokens")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64)
                .ok_or(CountError::Shape("/tokenize"))
        }
        Tokenize::Vllm => {
            let req = match (messages, prompt) {
                (Some(m), _) => {
                    let mut r = json!({"model": model, "messages": m, "add_generation_prompt": true});
                    if let (Some(tools), Some(o)) = (body.get("tools"), r.as_object_mut()) {
                        o.insert("tools".into(), tools.clone());
                    }
                    r
                }
                (None, Some(text)) => json!({"model": model, "prompt": text}),
                (None, None) => return Err(CountError::Nothing),
            };
            let t = post(up, p, "/tokenize", req).await?;
            t.get("count").and_then(Value::as_u64).ok_or(CountError::Shape("/tokenize"))
        }
    }
}

/// The server's own count of the prompt `body` sends to `model`, within [`TIMEOUT`].
pub async fn count(
    up: &Upstream,
    p: &ProviderState,
    how: Tokenize,
    body: &Map<String, Value>,
    model: &str,
) -> Result<u64, CountError> {
    tokio::time::timeout(TIMEOUT, ask(up, p, how, body, model))
        .await
        .map_err(|_| CountError::Timeout(TIMEOUT))?
}
