//! The LLM wire formats nodegate understands: which endpoint a request is for, the few request
//! fields decisions need (model, stream, max_tokens, usage options, prompt text), and the
//! rewrite sent upstream (model name; `stream_options.include_usage` when the client did not
//! ask for usage, so every stream can be counted).
use serde_json::{Map, Value};

use super::error::LlmError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ChatCompletions,
    Completions,
    Responses,
    Embeddings,
    Models,
    /// Anthropic `/v1/messages`.
    Messages,
    /// Anthropic `/v1/messages/count_tokens` (passed through, not charged).
    CountTokens,
}

impl Api {
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.split('?').next().unwrap_or(path);
        Some(match path.trim_end_matches('/') {
            "/v1/chat/completions" => Self::ChatCompletions,
            "/v1/completions" => Self::Completions,
            "/v1/responses" => Self::Responses,
            "/v1/embeddings" => Self::Embeddings,
            "/v1/models" => Self::Models,
            "/v1/messages" => Self::Messages,
            "/v1/messages/count_tokens" => Self::CountTokens,
            _ => return None,
        })
    }

    /// Errors for this endpoint are shaped like Anthropic's.
    pub fn anthropic(self) -> bool {
        matches!(self, Self::Messages | Self::CountTokens)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Completions => "text_completion",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
            Self::Messages => "chat",
            Self::CountTokens => "count_tokens",
        }
    }

    /// Requests that generate tokens and are charged against budgets.
    pub fn charged(self) -> bool {
        !matches!(self, Self::Models | Self::CountTokens)
    }
}

/// What the gateway read from a request body.
#[derive(Debug)]
pub struct Parsed {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// The client asked for the final usage chunk itself (OpenAI streaming).
    pub client_wants_usage: bool,
}

pub fn parse(api: Api, bytes: &[u8]) -> Result<Parsed, LlmError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| LlmError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(body) = v else {
        return Err(LlmError::bad_request("request body must be a JSON object".into()));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(LlmError::bad_request("`model` must be a non-empty string".into())),
        None => return Err(LlmError::bad_request("missing required field `model`".into())),
    };
    match api {
        Api::ChatCompletions | Api::Messages if !body.get("messages").is_some_and(Value::is_array) => {
            return Err(LlmError::bad_request("missing required field `messages` (an array)".into()));
        }
        Api::Completions if body.get("prompt").is_none() => {
            return Err(LlmError::bad_request("missing required field `prompt`".into()));
        }
        Api::Embeddings if body.get("input").is_none() => {
            return Err(LlmError::bad_request("missing required field `input`".into()));
        }
        Api::Messages if !body.get("max_tokens").is_some_and(Value::is_u64) => {
            return Err(LlmError::bad_request("missing required field `max_tokens`".into()));
        }
        _ => {}
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64));
    let client_wants_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed { body, model, stream, max_tokens, client_wants_usage })
}

/// Whether the gateway adds `stream_options.include_usage` (and hides the extra chunk).
pub fn adds_usage_option(api: Api, p: &Parsed) -> bool {
    p.stream && matches!(api, Api::ChatCompletions | Api::Completions) && !p.client_wants_usage
}

/// The body sent to a provider: the provider's model name, and usage asked for on streams.
pub fn upstream_body(api: Api, p: &Parsed, model: &str) -> Vec<u8> {
    let mut body = p.body.clone();
    body.insert("model".into(), Value::String(model.to_string()));
    if adds_usage_option(api, p) {
        let opts = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Sets the request's output cap (the field its API reads) when it has none, so the provider
/// stops where the budget reservation stopped counting.
pub fn cap_output(api: Api, p: &mut Parsed, cap: u64) {
    if p.max_tokens.is_none() && api != Api::Embeddings {
        lower_output(api, p, cap);
    }
}

/// Lowers the request's output cap to `cap` in whichever field it uses (adding the API's own
/// field when it has none).
pub fn lower_output(api: Api, p: &mut Parsed, cap: u64) {
    let mut set = false;
    for f in ["max_completion_tokens", "max_tokens", "max_output_tokens"] {
        if p.body.contains_key(f) {
            p.body.insert(f.into(), Value::from(cap));
            set = true;
        }
    }
    if !set {
        let field = if api == Api::Responses { "max_output_tokens" } else { "max_tokens" };
        p.body.insert(field.into(), Value::from(cap));
    }
    p.max_tokens = Some(cap);
}

/// The text a request sends to the model, for token estimation.
pub fn prompt_text(api: Api, body: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut push = |v: &Value| collect_text(v, &mut out);
    match api {
        Api::ChatCompletions | Api::Messages => {
            if let Some(s) = body.get("system") {
                push(s);
            }
            if let Some(m) = body.get("messages") {
                push(m);
            }
            if let Some(t) = body.get("tools") {
                push(t);
            }
        }
        Api::Completions => body.get("prompt").into_iter().for_each(push),
        Api::Embeddings => body.get("input").into_iter().for_each(push),
        Api::Responses => {
            for k in ["instructions", "input", "tools"] {
                if let Some(v) = body.get(k) {
                    push(v);
                }
            }
        }
        Api::Models | Api::CountTokens => {}
    }
    out
}

/// Appends every string value (content, names, arguments) under `v`.
fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "type" && k.as_str() != "role")
            .for_each(|(_, x)| collect_text(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rewrites_a_streaming_chat_request() {
        let raw = br#"{"model":"fast","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hello there"}]}"#;
        let p = parse(Api::ChatCompletions, raw).unwrap();
        assert_eq!(
            (p.model.as_str(), p.stream, p.max_tokens, p.client_wants_usage),
            ("fast", true, Some(50), false)
        );
        let up: Value =
            serde_json::from_slice(&upstream_body(Api::ChatCompletions, &p, "gpt-4o-mini")).unwrap();
        assert_eq!(up["model"], "gpt-4o-mini");
        assert_eq!(up["stream_options"]["include_usage"], true);
        assert_eq!(prompt_text(Api::ChatCompletions, &p.body), "hello there\n");
    }

    #[test]
    fn rejects_what_it_cannot_route() {
        assert!(parse(Api::ChatCompletions, b"{nope").unwrap_err().message.contains("not valid JSON"));
        assert!(parse(Api::ChatCompletions, br#"{"messages":[]}"#).unwrap_err().message.contains("`model`"));
        assert!(parse(Api::ChatCompletions, br#"{"model":"m"}"#).unwrap_err().message.contains("`messages`"));
        assert!(
            parse(Api::Messages, br#"{"model":"m","messages":[]}"#)
                .unwrap_err()
                .message
                .contains("max_tokens")
        );
        assert_eq!(Api::from_path("/v1/chat/completions?x=1"), Some(Api::ChatCompletions));
        assert_eq!(Api::from_path("/v2/chat"), None);
    }
}
