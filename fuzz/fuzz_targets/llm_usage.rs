//! Provider answers and stream events (OpenAI and Anthropic shapes): usage reading must not
//! panic on any body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nodegate::llm::{format::Api, usage};

fuzz_target!(|data: &[u8]| {
    let apis = [Api::ChatCompletions, Api::Completions, Api::Responses, Api::Embeddings, Api::Messages];
    for api in apis {
        let _ = usage::from_json(api, data);
        let mut s = usage::StreamUsage::default();
        let text = String::from_utf8_lossy(data);
        for (i, line) in text.lines().enumerate() {
            let name = (i % 2 == 0).then_some("message_delta");
            let _ = s.on_event(api, name, line, i % 3 == 0);
        }
    }
});
