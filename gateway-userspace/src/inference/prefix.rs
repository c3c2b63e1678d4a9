//! Prefix-cache affinity: prompts are cut into blocks whose hashes are chained (a block's hash
//! covers everything before it, as the servers' prefix caches do), and each endpoint remembers
//! the blocks of the requests routed to it (bounded, oldest forgotten first). A pick asks, for
//! every endpoint at once, how many leading blocks of this prompt it probably has cached.
use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hasher},
};

/// Chained hashes of the full `block`-byte blocks of `text`, seeded by the model name.
pub fn block_hashes(model: &str, text: &[u8], block: usize) -> Vec<u64> {
    let state = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let mut prev = {
        let mut h = state.build_hasher();
        h.write(model.as_bytes());
        h.finish()
    };
    text.chunks_exact(block.max(1))
        .map(|b| {
            let mut h = state.build_hasher();
            h.write_u64(prev);
            h.write(b);
            prev = h.finish();
            prev
        })
        .collect()
}

/// Which endpoints hold which blocks: block hash -> bitset of endpoints.
pub struct PrefixIndex {
    words: usize,
    map: HashMap<u64, Vec<u64>>,
    /// Per endpoint, its blocks in insertion order (refreshed on reuse), for eviction.
    order: Vec<VecDeque<u64>>,
    capacity: usize,
}

impl PrefixIndex {
    pub fn new(endpoints: usize, capacity: usize) -> Self {
        Self {
            words: endpoints.div_ceil(64).max(1),
            map: HashMap::new(),
            order: vec![VecDeque::new(); endpoints],
            capacity,
        }
    }

    /// Leading blocks of `hashes` each endpoint holds, written into `depth` (one per endpoint).
    pub fn depths(&self, hashes: &[u64], depth: &mut [u32]) {
        depth.iter_mut().for_each(|d| *d = 0);
        let mut alive = vec![u64::MAX; self.words];
        for (i, h) in hashes.iter().enumerate() {
            let Some(bits) = self.map.get(h) else { break };
            let mut any = false;
            for (w, a) in alive.iter_mut().enumerate() {
                *a &= bits[w];
                let mut x = *a;
                any |= x != 0;
                while x != 0 {
                    let e = w * 64 + x.trailing_zeros() as usize;
                    if let Some(d) = depth.get_mut(e) {
                        *d = i as u32 + 1;
                    }
                    x &= x - 1;
                }
            }
            if !any {
                break;
            }
        }
    }

    /// Remembers that `endpoint` now caches these blocks.
    pub fn record(&mut self, endpoint: usize, hashes: &[u64]) {
        let (w, bit) = (endpoint / 64, 1u64 << (endpoint % 64));
        for h in hashes {
            let bits = self.map.entry(*h).or_insert_with(|| vec![0; self.words]);
            if bits[w] & bit == 0 {
                bits[w] |= bit;
                self.order[endpoint].push_back(*h);
            }
        }
        while self.order[endpoint].len() > self.capacity {
            let Some(old) = self.order[endpoint].pop_front() else { break };
            if let Some(bits) = self.map.get_mut(&old) {
                bits[w] &= !bit;
                if bits.iter().all(|b| *b == 0) {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// The index for a new set of `endpoints`, keeping what each surviving one holds:
    /// `moved[old]` is an endpoint's new position, `None` when it left.
    pub fn carried(&self, moved: &[Option<usize>], endpoints: usize) -> Self {
        let mut next = Self::new(endpoints, self.capacity);
        for (old, blocks) in self.order.iter().enumerate() {
            if let Some(Some(new)) = moved.get(old) {
                let hashes: Vec<u64> = blocks.iter().copied().collect();
                next.record(*new, &hashes);
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_blocks_and_depths() {
        let a = block_hashes("m", b"system prompt A|user one|", 8);
        let b = block_hashes("m", b"system prompt A|user two|", 8);
        assert_eq!(a.len(), 3);
        assert_eq!(a[..2], b[..2], "a shared prefix gives shared leading blocks");
        assert_ne!(a[2], b[2]);
        assert_ne!(
            block_hashes("other", b"system prompt A|", 8),
            a[..2].to_vec(),
            "the model seeds the chain"
        );

        let mut idx = PrefixIndex::new(70, 100);
        idx.record(3, &a);
        idx.record(65, &a[..1]);
        let mut d = vec![0; 70];
        idx.depths(&b, &mut d);
        assert_eq!((d[3], d[65], d[0]), (2, 1, 0));
    }

    #[test]
    fn a_new_member_set_keeps_what_survivors_hold() {
        let a = block_hashes("m", &[7u8; 64], 16);
        let mut idx = PrefixIndex::new(3, 100);
        idx.record(0, &a[..1]);
        idx.record(2, &a);
        let next = idx.carried(&[None, None, Some(0)], 2);
        let mut d = vec![0; 2];
        next.depths(&a, &mut d);
        assert_eq!(d, vec![4, 0], "endpoint 2 moved to 0 with its blocks; endpoint 0 left");
    }

    #[test]
    fn endpoints_forget_their_oldest_blocks() {
        let mut idx = PrefixIndex::new(2, 4);
        let first = block_hashes("m", &[1u8; 64], 16);
        let second = block_hashes("m", &[2u8; 64], 16);
        idx.record(0, &first);
        idx.record(0, &second);
        let mut d = vec![0; 2];
        idx.depths(&first, &mut d);
        assert_eq!(d[0], 0, "capacity 4: the first prompt's blocks were evicted");
        idx.depths(&second, &mut d);
        assert_eq!(d[0], 4);
    }
}
