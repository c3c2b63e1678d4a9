//! Rate limits on policy rules: a token bucket per (rule, caller) holding `requests` tokens and
//! refilling them evenly over `per`, so a caller gets `requests` at once and then one every
//! `per / requests`. Buckets outlive config versions (a reload does not hand out a fresh
//! allowance) and are bounded in number: past [`MAX_BUCKETS`] the full ones (callers that have
//! rested) are forgotten first.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::config::{RateKey, RuleRateLimit};

/// Most buckets remembered at once.
pub const MAX_BUCKETS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by (rule, caller key).
type Buckets = HashMap<(Arc<str>, Box<str>), Bucket>;

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<Buckets>,
}

/// Over the limit: when the next request would be let through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exceeded {
    pub retry_after: Duration,
}

/// The key a rate limit counts a caller under.
pub fn key(by: RateKey, workload: &str, principal: Option<&str>) -> Box<str> {
    match by {
        RateKey::Workload => workload.into(),
        RateKey::Principal => principal.unwrap_or(workload).into(),
        RateKey::Rule => "".into(),
    }
}

impl Limiter {
    /// Takes one token from the bucket of `rule` for `key`, or says how long until one is there.
    pub fn take(&self, rule: &Arc<str>, key: Box<str>, limit: &RuleRateLimit) -> Result<(), Exceeded> {
        self.take_at(rule, key, limit, Instant::now())
    }

    fn take_at(
        &self,
        rule: &Arc<str>,
        key: Box<str>,
        limit: &RuleRateLimit,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let capacity = f64::from(limit.requests);
        let per_token = limit.per.as_secs_f64() / capacity;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            forget_rested(&mut buckets, now, per_token, capacity);
        }
        let b = buckets.entry((rule.clone(), key)).or_insert(Bucket { tokens: capacity, at: now });
        let refilled = now.saturating_duration_since(b.at).as_secs_f64() / per_token;
        b.tokens = (b.tokens + refilled).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Exceeded { retry_after: Duration::from_secs_f64((1.0 - b.tokens) * per_token) })
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops buckets that have refilled (their callers rested); when none has, the oldest half.
fn forget_rested(buckets: &mut Buckets, now: Instant, per_token: f64, capacity: f64) {
    buckets
        .retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / per_token < capacity);
    if buckets.len() >= MAX_BUCKETS {
        let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 2];
        buckets.retain(|_, b| b.at > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_ms: u64) -> RuleRateLimit {
        RuleRateLimit { requests, per: Duration::from_millis(per_ms), by: RateKey::Workload }
    }

    #[test]
    fn a_burst_then_one_per_interval_and_callers_apart() {
        let l = Limiter::default();
        let rule: Arc<str> = Arc::from("r");
        let t0 = Instant::now();
        let lim = limit(3, 3000);
        for _ in 0..3 {
            assert!(l.take_at(&rule, "a".into(), &lim, t0).is_ok());
        }
        let e = l.take_at(&rule, "a".into(), &lim, t0).unwrap_err();
        assert!((e.retry_after.as_secs_f64() - 1.0).abs() < 1e-6, "{e:?}");
        assert!(l.take_at(&rule, "b".into(), &lim, t0).is_ok(), "another caller has its own bucket");
        assert!(l.take_at(&rule, "a".into(), &lim, t0 + Duration::from_millis(999)).is_err());
        assert!(l.take_at(&rule, "a".into(), &lim, t0 + Duration::from_millis(1001)).is_ok());
        let other: Arc<str> = Arc::from("other");
        assert!(l.take_at(&other, "a".into(), &lim, t0).is_ok(), "another rule has its own bucket");
    }

    #[test]
    fn buckets_stay_bounded() {
        let l = Limiter::default();
        let rule: Arc<str> = Arc::from("r");
        let lim = limit(1, 60_000);
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS + 10) {
            let _ = l.take_at(&rule, i.to_string().into(), &lim, t0 + Duration::from_micros(i as u64));
        }
        assert!(l.len() <= MAX_BUCKETS, "{}", l.len());
    }

    #[test]
    fn keys_follow_the_setting() {
        assert_eq!(&*key(RateKey::Workload, "w", Some("p")), "w");
        assert_eq!(&*key(RateKey::Principal, "w", Some("p")), "p");
        assert_eq!(&*key(RateKey::Principal, "w", None), "w");
        assert_eq!(&*key(RateKey::Rule, "w", Some("p")), "");
    }
}
