//! Token estimation with the models' own tokenizers (OpenAI's BPE tables, counted by `llm::bpe`
//! exactly as tiktoken does): for admission (prompt tokens, before a provider has counted
//! anything) and for streams that end without a usage report.
//!
//! Encoding per model family: `o200k_base` for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4 and
//! chatgpt-4o; `cl100k_base` for gpt-4, gpt-3.5 and text-embedding-3/ada-002. Every other model
//! (Claude, Llama, Qwen, Mistral, ...) uses `cl100k_base` as a documented approximation: those
//! tokenizers are not public in this form, and cl100k is within about 10-20% on English text.
use super::bpe::{self, Bpe};

fn encoding(model: &str) -> &'static Bpe {
    let m = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
    let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o"];
    if o200k.iter().any(|p| m.starts_with(p)) { bpe::o200k() } else { bpe::cl100k() }
}

/// Loads both encodings (a few hundred milliseconds) so the first request does not pay for it.
pub fn warm() {
    let _ = bpe::o200k();
    let _ = bpe::cl100k();
}

/// Text longer than this is tokenised off the async workers: a regex pass over a large prompt
/// takes milliseconds to hundreds of them, long enough to delay every connection on the worker.
const INLINE_BYTES: usize = 16 << 10;

/// Tokens in `text` for `model`. Large texts are counted with the worker handed off
/// (`block_in_place`), so other connections keep being served meanwhile.
pub fn count(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let run = || encoding(model).count(text) as u64;
    let on_workers = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if text.len() > INLINE_BYTES && on_workers { tokio::task::block_in_place(run) } else { run() }
}

/// Prompt tokens of a request: the text plus a few tokens of framing per message.
pub fn estimate_prompt(model: &str, text: &str, messages: usize) -> u64 {
    count(model, text) + 3 * messages as u64 + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_family_encoding() {
        // "hello world" is two tokens in both encodings; the families differ on longer text.
        assert_eq!(count("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count("gpt-3.5-turbo", "hello world"), 2);
        let text = "Tokenization differs: 東京 and São Paulo.";
        assert_ne!(
            count("gpt-4o", text),
            count("gpt-4", text),
            "o200k and cl100k should disagree on this text"
        );
        assert_eq!(
            count("claude-3-5-sonnet", text),
            count("gpt-4", text),
            "unknown models fall back to cl100k"
        );
        assert_eq!(count("any", ""), 0);
    }
}

#[cfg(test)]
mod rss_probe {
    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "memory probe: cargo test --release -p gateway-userspace --lib rss_probe -- --ignored --nocapture"]
    fn rss_probe() {
        let a = rss_kb();
        let _ = crate::llm::bpe::o200k().count("warm the regex: hello world");
        let b = rss_kb();
        let _ = crate::llm::bpe::cl100k().count("warm the regex: hello world");
        let c = rss_kb();
        let _ = tiktoken_rs::o200k_base_singleton();
        let d = rss_kb();
        let _ = tiktoken_rs::cl100k_base_singleton();
        let e = rss_kb();
        eprintln!(
            "resident: nodegate's o200k {:.1} MB, cl100k {:.1} MB; tiktoken-rs o200k {:.1} MB, cl100k {:.1} MB",
            (b - a) as f64 / 1024.0,
            (c - b) as f64 / 1024.0,
            (d - c) as f64 / 1024.0,
            (e - d) as f64 / 1024.0
        );
    }
}
