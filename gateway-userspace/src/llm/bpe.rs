//! Token counting with OpenAI's BPE tables (`cl100k_base`, `o200k_base`) in a compact form: the
//! token bytes in one arena, an open-addressing table of ranks, one pre-tokenising regex. Counts
//! are exactly tiktoken's (`encode_ordinary(text).len()`: the same tables, pattern and merge
//! rule; a parity test compares them on a corpus), in about a tenth of the memory: tiktoken-rs
//! keeps every token three times in separate allocations plus 128 copies of its regex, 53 MB for
//! o200k and 26 MB for cl100k; this form takes ~5 MB and ~3 MB. Nothing here decodes.
use std::sync::{Arc, OnceLock};

use base64::Engine as _;

/// One encoding, ready to count.
pub struct Bpe {
    /// Every token's bytes, concatenated in rank order.
    arena: Box<[u8]>,
    /// Rank -> (offset into `arena`, length).
    spans: Box<[(u32, u32)]>,
    /// Open addressing, power-of-two sized: a rank, or `EMPTY`.
    table: Box<[u32]>,
    regex: fancy_regex::Regex,
}

const EMPTY: u32 = u32::MAX;

/// Why a table could not be read (a bug in the embedded assets, caught by the tests).
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    #[error("line {0}: {1}")]
    Line(usize, String),
    #[error("line {0}: ranks must run 0, 1, 2, ... in line order")]
    Ranks(usize),
    #[error("pattern: {0}")]
    Pattern(String),
}

/// FxHash (word at a time): short keys, no allocation, spread enough for a table at most half
/// full.
fn hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

impl Bpe {
    /// Reads a `.tiktoken` table (base64 token, space, rank per line) and the pattern.
    pub fn parse(table: &str, pattern: &str) -> Result<Self, BpeError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        // Decoded straight into the arena (no allocation per token: the freed small blocks of a
        // per-token parse would stay resident). The tables list ranks in order, 0..n.
        let mut arena = Vec::with_capacity(table.len() / 2);
        let mut spans = Vec::with_capacity(table.len() / 10);
        for (i, line) in table.lines().enumerate() {
            let (raw, rank) = line.split_once(' ').ok_or_else(|| BpeError::Line(i, "no rank".into()))?;
            let rank: usize = rank.trim().parse().map_err(|_| BpeError::Line(i, format!("rank {rank:?}")))?;
            if rank != i {
                return Err(BpeError::Ranks(i));
            }
            let start = arena.len();
            b64.decode_vec(raw, &mut arena).map_err(|e| BpeError::Line(i, e.to_string()))?;
            spans.push((start as u32, (arena.len() - start) as u32));
        }
        let n = spans.len();
        let size = (n * 2).next_power_of_two();
        let mut index = vec![EMPTY; size];
        for (rank, (o, l)) in spans.iter().enumerate() {
            let t = &arena[*o as usize..(*o + *l) as usize];
            let mut slot = hash(t) as usize & (size - 1);
            while index[slot] != EMPTY {
                if index[slot] as usize != rank && {
                    let (po, pl) = spans[index[slot] as usize];
                    &arena[po as usize..(po + pl) as usize] == t
                } {
                    return Err(BpeError::Line(rank, "a token listed twice".into()));
                }
                slot = (slot + 1) & (size - 1);
            }
            index[slot] = rank as u32;
        }
        arena.shrink_to_fit();
        spans.shrink_to_fit();
        let regex = fancy_regex::Regex::new(pattern).map_err(|e| BpeError::Pattern(e.to_string()))?;
        Ok(Self { arena: arena.into(), spans: spans.into(), table: index.into(), regex })
    }

    fn bytes_of(&self, rank: u32) -> &[u8] {
        let (o, l) = self.spans[rank as usize];
        &self.arena[o as usize..(o + l) as usize]
    }

    /// The rank of a token, if `bytes` is one.
    fn rank(&self, bytes: &[u8]) -> Option<u32> {
        let mask = self.table.len() - 1;
        let mut slot = hash(bytes) as usize & mask;
        loop {
            let r = self.table[slot];
            if r == EMPTY {
                return None;
            }
            if self.bytes_of(r) == bytes {
                return Some(r);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Tokens in `text`, as tiktoken's `encode_ordinary(text).len()`.
    pub fn count(&self, text: &str) -> usize {
        let mut n = 0;
        let mut parts = Vec::new();
        for m in self.regex.find_iter(text) {
            // The pattern cannot fail on a valid string short of a backtracking limit; such a
            // piece counts as its bytes (an upper bound), as a broken estimate should.
            let Ok(m) = m else {
                n += 1;
                continue;
            };
            let piece = m.as_str().as_bytes();
            n += if self.rank(piece).is_some() { 1 } else { self.merged(piece, &mut parts) };
        }
        n
    }

    /// Tokens a piece that is not itself a token splits into: tiktoken's merge rule (the pair of
    /// lowest rank merges first, until no adjacent pair is a token).
    fn merged(&self, piece: &[u8], parts: &mut Vec<(usize, u32)>) -> usize {
        if piece.len() < 2 {
            return piece.len();
        }
        let rank_of = |a: usize, b: usize| self.rank(&piece[a..b]).unwrap_or(u32::MAX);
        parts.clear();
        // (start, rank of the pair starting here)
        for i in 0..piece.len() - 1 {
            parts.push((i, rank_of(i, i + 2)));
        }
        parts.push((piece.len() - 1, u32::MAX));
        parts.push((piece.len(), u32::MAX));
        let lowest = |parts: &[(usize, u32)]| {
            parts[..parts.len() - 1]
                .iter()
                .enumerate()
                .filter(|(_, p)| p.1 != u32::MAX)
                .min_by_key(|(i, p)| (p.1, *i))
                .map(|(i, _)| i)
        };
        let after = |parts: &[(usize, u32)], j: usize| {
            if j + 3 < parts.len() { rank_of(parts[j].0, parts[j + 3].0) } else { u32::MAX }
        };
        while let Some(i) = lowest(parts) {
            parts[i].1 = after(parts, i);
            if i > 0 {
                parts[i - 1].1 = after(parts, i - 1);
            }
            parts.remove(i + 1);
        }
        parts.len() - 1
    }

    /// Memory held by the tables (not the regex), for the record.
    pub fn table_bytes(&self) -> usize {
        self.arena.len() + self.spans.len() * 8 + self.table.len() * 4
    }
}

const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+",
);

/// The encodings, each read on first use and then shared.
pub fn cl100k() -> &'static Arc<Bpe> {
    static E: OnceLock<Arc<Bpe>> = OnceLock::new();
    E.get_or_init(|| load(include_str!("../../assets/cl100k_base.tiktoken"), CL100K_PATTERN))
}

pub fn o200k() -> &'static Arc<Bpe> {
    static E: OnceLock<Arc<Bpe>> = OnceLock::new();
    E.get_or_init(|| load(include_str!("../../assets/o200k_base.tiktoken"), O200K_PATTERN))
}

#[allow(clippy::expect_used)]
fn load(table: &str, pattern: &str) -> Arc<Bpe> {
    // The tables are part of the binary and checked by the tests: failing here is a build bug.
    Arc::new(Bpe::parse(table, pattern).expect("the embedded BPE table is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "hello world",
            "Hello, World! It's a test; don't you think? We'll see.",
            "  leading and trailing spaces   ",
            "line one\nline two\r\n\r\nline four\n\n\n",
            "numbers 1234567890 and 3.14159 and 1,000,000",
            "unicode: naïve café, Ærøskøbing, Здравствуйте, こんにちは世界, 你好，世界, مرحبا",
            "emoji 🚀🔥👍🏽 and symbols ∑∫√ ±×÷ ©®™",
            "code: fn main() { println!(\"{}\", x.iter().map(|y| y * 2).sum::<i32>()); }",
            "URLs https://example.com/a/b?c=d&e=f#g and paths /usr/local/bin/../lib//x",
            "<|endoftext|> special-looking text stays ordinary",
            "tabs\tand\tmixed \t whitespace\u{a0}nbsp",
            "ALLCAPS WORDS AND MiXeD CaSe wOrDs camelCaseIdentifiers snake_case_names",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "zxqvbnmlkjhgfdsapoiuytrewq qwxzv rare byte pairs xzqj",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A long mixed text, and every byte-ish character.
        v.push(v.join(" | ").repeat(20));
        v.push((0u32..0x800).filter_map(char::from_u32).collect());
        v
    }

    #[test]
    fn counts_are_exactly_tiktokens() {
        let (ours_o, ours_c) = (o200k(), cl100k());
        let (tik_o, tik_c) = (tiktoken_rs::o200k_base_singleton(), tiktoken_rs::cl100k_base_singleton());
        for text in corpus() {
            assert_eq!(ours_o.count(&text), tik_o.encode_ordinary(&text).len(), "o200k: {text:?}");
            assert_eq!(ours_c.count(&text), tik_c.encode_ordinary(&text).len(), "cl100k: {text:?}");
        }
    }

    #[test]
    fn tables_are_compact() {
        assert!(o200k().table_bytes() < 6 << 20, "{}", o200k().table_bytes());
        assert!(cl100k().table_bytes() < 3 << 20, "{}", cl100k().table_bytes());
    }

    #[test]
    fn a_broken_table_is_refused() {
        assert!(Bpe::parse("YQ== 0\nYg== 0\n", "a").is_err(), "a rank twice");
        assert!(Bpe::parse("YQ== 0\nYg== 5\n", "a").is_err(), "a gap");
        assert!(Bpe::parse("YQ== 0\nYQ== 1\n", "a").is_err(), "a token twice");
        assert!(Bpe::parse("YQ== 0\nYg== 1\n", "a").is_ok());
        assert!(Bpe::parse("not-base64!! 0\n", "a").is_err());
    }
}

#[cfg(test)]
mod timing {
    #[test]
    #[ignore = "timing probe: cargo test --release -p gateway-userspace --lib bpe_speed -- --ignored --nocapture"]
    fn bpe_speed() {
        let text =
            "The quick brown fox jumps over the lazy dog; naïve café 1234, fn x() { y } \n".repeat(2000);
        let (ours, tik) = (super::o200k(), tiktoken_rs::o200k_base_singleton());
        let _ = (ours.count(&text), tik.encode_ordinary(&text).len());
        let t = std::time::Instant::now();
        for _ in 0..5 {
            std::hint::black_box(ours.count(&text));
        }
        let a = t.elapsed() / 5;
        let t = std::time::Instant::now();
        for _ in 0..5 {
            std::hint::black_box(tik.encode_ordinary(&text).len());
        }
        let b = t.elapsed() / 5;
        eprintln!("{} KB: nodegate {a:?}, tiktoken-rs {b:?}", text.len() / 1024);
    }
}
