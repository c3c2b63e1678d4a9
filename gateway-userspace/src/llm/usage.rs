//! Token usage from provider responses: JSON bodies and SSE streams of every supported format.
//! What the provider reports is authoritative; what nodegate estimates (streamed text through the
//! tokenizer) is used only for streams that end without a report and for cutting off a stream
//! that runs past its budget.
use serde::Serialize;
use serde_json::Value;

use super::format::Api;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Input tokens, including cached and cache-creation tokens.
    pub input: u64,
    pub output: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the prompt cache (Anthropic).
    pub cache_creation: u64,
    /// Output tokens spent on reasoning (included in `output`).
    pub reasoning: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

/// Usage object of OpenAI chat/completions/embeddings (`prompt_tokens`...).
fn openai_chat(usage: &Value) -> Usage {
    Usage {
        input: u(usage, &["prompt_tokens"]),
        output: u(usage, &["completion_tokens"]),
        cached_input: u(usage, &["prompt_tokens_details", "cached_tokens"]),
        cache_creation: 0,
        reasoning: u(usage, &["completion_tokens_details", "reasoning_tokens"]),
    }
}

/// Usage object of the Responses API (`input_tokens`... with details).
fn openai_responses(usage: &Value) -> Usage {
    Usage {
        input: u(usage, &["input_tokens"]),
        output: u(usage, &["output_tokens"]),
        cached_input: u(usage, &["input_tokens_details", "cached_tokens"]),
        cache_creation: 0,
        reasoning: u(usage, &["output_tokens_details", "reasoning_tokens"]),
    }
}

/// Anthropic usage: `input_tokens` excludes cache reads and writes, which are added here.
fn anthropic(usage: &Value) -> Usage {
    let read = u(usage, &["cache_read_input_tokens"]);
    let created = u(usage, &["cache_creation_input_tokens"]);
    Usage {
        input: u(usage, &["input_tokens"]) + read + created,
        output: u(usage, &["output_tokens"]),
        cached_input: read,
        cache_creation: created,
        reasoning: 0,
    }
}

/// Usage from a complete (non-streaming) JSON response body.
pub fn from_json(api: Api, body: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let usage = v.get("usage").filter(|u| u.is_object())?;
    Some(match api {
        Api::Messages => anthropic(usage),
        Api::Responses => openai_responses(usage),
        _ => openai_chat(usage),
    })
}

/// What to do with one streamed event.
#[derive(Debug, PartialEq, Eq)]
pub enum Keep {
    Yes,
    /// The usage-only chunk the gateway asked for and the client did not.
    No,
}

/// Accounting state of one streamed response.
#[derive(Debug, Default)]
pub struct StreamUsage {
    /// Usage as the provider reported it so far (Anthropic reports in two halves).
    pub reported: Option<Usage>,
    /// Output text seen, for estimation when no usage is reported.
    pub output_text: String,
    /// Number of content events seen.
    pub chunks: u64,
    /// The provider's last event arrived: `[DONE]` (chat completions), `message_stop`
    /// (Anthropic), `response.completed` / `incomplete` / `failed` (Responses). A client may
    /// close right after it without waiting for the body's end: the answer was complete.
    pub finished: bool,
}

impl StreamUsage {
    /// Updates from one event's `data` (and `event` name); says whether to pass it on.
    /// `hide_usage_chunk`: drop the OpenAI usage-only chunk (the gateway added the option).
    pub fn on_event(&mut self, api: Api, name: Option<&str>, data: &str, hide_usage_chunk: bool) -> Keep {
        let data = data.trim();
        if data == "[DONE]" {
            self.finished = true;
            return Keep::Yes;
        }
        if data.is_empty() {
            return Keep::Yes;
        }
        if !matches!(api, Api::Messages | Api::Responses) {
            return self.openai_chunk(data, hide_usage_chunk);
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return Keep::Yes };
        match api {
            Api::Messages => self.anthropic_event(&v),
            _ => {
                let ty = v.get("type").and_then(Value::as_str).or(name).unwrap_or("");
                if matches!(ty, "response.completed" | "response.incomplete" | "response.failed") {
                    self.finished = true;
                }
                if ty == "response.output_text.delta" || ty == "response.function_call_arguments.delta" {
                    self.text(v.get("delta").and_then(Value::as_str));
                } else if (ty == "response.completed" || ty == "response.incomplete")
                    && let Some(us) = v.get("response").and_then(|r| r.get("usage")).filter(|u| u.is_object())
                {
                    self.reported = Some(openai_responses(us));
                }
            }
        }
        Keep::Yes
    }

    /// An OpenAI chat/completions chunk, read into borrowed typed fields (no map is built for
    /// the hundreds of chunks of a stream; only a usage object is parsed as a value).
    fn openai_chunk(&mut self, data: &str, hide_usage_chunk: bool) -> Keep {
        let Ok(c) = serde_json::from_str::<chunk::Chunk<'_>>(data) else { return Keep::Yes };
        let choices = c.choices.unwrap_or_default();
        for ch in &choices {
            self.text(ch.text.as_deref());
            if let Some(d) = &ch.delta {
                self.text(d.content.as_deref());
                self.text(d.reasoning_content.as_deref());
                for tc in d.tool_calls.iter().flatten() {
                    self.text(tc.function.as_ref().and_then(|f| f.arguments.as_deref()));
                }
            }
        }
        if let Some(us) = c.usage.filter(|u| u.is_object()) {
            self.reported = Some(openai_chat(&us));
            if hide_usage_chunk && choices.is_empty() {
                return Keep::No;
            }
        }
        Keep::Yes
    }

    fn anthropic_event(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_stop" => self.finished = true,
            "message_start" => {
                if let Some(us) = v.get("message").and_then(|m| m.get("usage")) {
                    self.reported = Some(anthropic(us));
                }
            }
            "content_block_delta" => {
                let d = v.get("delta");
                self.text(d.and_then(|d| d.get("text")).and_then(Value::as_str));
                self.text(d.and_then(|d| d.get("partial_json")).and_then(Value::as_str));
                self.text(d.and_then(|d| d.get("thinking")).and_then(Value::as_str));
            }
            "message_delta" => {
                // Cumulative: output_tokens so far (and, on newer APIs, input and cache counts).
                if let Some(us) = v.get("usage") {
                    let mut r = self.reported.unwrap_or_default();
                    r.output = u(us, &["output_tokens"]).max(r.output);
                    if us.get("input_tokens").is_some() {
                        let later = anthropic(us);
                        r.input = r.input.max(later.input);
                        r.cached_input = r.cached_input.max(later.cached_input);
                        r.cache_creation = r.cache_creation.max(later.cache_creation);
                    }
                    self.reported = Some(r);
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, t: Option<&str>) {
        if let Some(t) = t.filter(|t| !t.is_empty()) {
            self.output_text.push_str(t);
            self.chunks += 1;
        }
    }
}

/// Borrowed views of an OpenAI streaming chunk: only the fields accounting reads.
mod chunk {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    pub struct Chunk<'a> {
        #[serde(borrow, default)]
        pub choices: Option<Vec<Choice<'a>>>,
        #[serde(default)]
        pub usage: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct Choice<'a> {
        #[serde(borrow, default)]
        pub text: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub delta: Option<Delta<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Delta<'a> {
        #[serde(borrow, default)]
        pub content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub reasoning_content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub tool_calls: Option<Vec<ToolCall<'a>>>,
    }

    #[derive(Deserialize)]
    pub struct ToolCall<'a> {
        #[serde(borrow, default)]
        pub function: Option<Function<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Function<'a> {
        #[serde(borrow, default)]
        pub arguments: Option<Cow<'a, str>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_of_every_format() {
        let chat = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#;
        assert_eq!(
            from_json(Api::ChatCompletions, chat),
            Some(Usage { input: 10, output: 5, cached_input: 4, cache_creation: 0, reasoning: 2 })
        );
        let resp =
            br#"{"usage":{"input_tokens":7,"output_tokens":3,"input_tokens_details":{"cached_tokens":1}}}"#;
        assert_eq!(
            from_json(Api::Responses, resp).map(|u| (u.input, u.output, u.cached_input)),
            Some((7, 3, 1))
        );
        let msg = br#"{"usage":{"input_tokens":5,"output_tokens":9,"cache_read_input_tokens":20,"cache_creation_input_tokens":3}}"#;
        assert_eq!(
            from_json(Api::Messages, msg),
            Some(Usage { input: 28, output: 9, cached_input: 20, cache_creation: 3, reasoning: 0 })
        );
        assert_eq!(from_json(Api::ChatCompletions, b"{}"), None);
    }

    #[test]
    fn openai_stream_hides_only_the_added_usage_chunk() {
        let mut s = StreamUsage::default();
        let content = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        assert_eq!(s.on_event(Api::ChatCompletions, None, content, true), Keep::Yes);
        assert_eq!(s.on_event(Api::ChatCompletions, None, usage, true), Keep::No);
        assert!(!s.finished, "not before the last event");
        assert_eq!(s.on_event(Api::ChatCompletions, None, "[DONE]", true), Keep::Yes);
        assert!(s.finished, "[DONE] is the last event");
        assert_eq!(s.reported.map(|u| (u.input, u.output)), Some((3, 1)));
        assert_eq!(s.output_text, "Hi");
        let mut s = StreamUsage::default();
        assert_eq!(
            s.on_event(Api::ChatCompletions, None, usage, false),
            Keep::Yes,
            "the client asked for it"
        );
    }

    #[test]
    fn anthropic_stream_combines_start_and_cumulative_deltas() {
        let mut s = StreamUsage::default();
        s.on_event(Api::Messages, Some("message_start"), r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"cache_read_input_tokens":100,"output_tokens":1}}}"#, false);
        s.on_event(
            Api::Messages,
            None,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hello"}}"#,
            false,
        );
        s.on_event(Api::Messages, None, r#"{"type":"message_delta","usage":{"output_tokens":7}}"#, false);
        s.on_event(Api::Messages, None, r#"{"type":"message_delta","usage":{"output_tokens":15}}"#, false);
        assert_eq!(
            s.reported,
            Some(Usage { input: 112, output: 15, cached_input: 100, cache_creation: 0, reasoning: 0 })
        );
        assert_eq!(s.output_text, "Hello");
    }

    #[test]
    fn responses_stream_reads_the_completed_event() {
        let mut s = StreamUsage::default();
        s.on_event(Api::Responses, None, r#"{"type":"response.output_text.delta","delta":"Yo"}"#, false);
        s.on_event(Api::Responses, None, r#"{"type":"response.completed","response":{"usage":{"input_tokens":4,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":1}}}}"#, false);
        assert_eq!(s.reported.map(|u| (u.input, u.output, u.reasoning)), Some((4, 2, 1)));
    }
}
