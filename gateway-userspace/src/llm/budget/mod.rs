//! Budgets and rate limits per workload: requests and tokens per minute, tokens per hour, day
//! and month, cost per day and month. Enforced at admission by reserving the worst case
//! (estimated prompt tokens plus max_tokens, and its price), trued up with the real usage when
//! the response ends, so concurrent requests cannot overshoot. Counters live in memory or in
//! Redis (shared by every node); when Redis is unreachable the local counters take over, and
//! that is logged and counted.
mod memory;
mod redis;
mod window;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use memory::Memory;
pub use window::Window;

use crate::{
    config::{Budget, Scope},
    identity::Identity,
    policy::Selector,
};

/// What a request costs (or is reserved to cost).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub requests: u64,
    pub tokens: u64,
    /// Millionths of a US dollar.
    pub micro_usd: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requests,
    Tokens,
    Cost,
}

struct Limit {
    kind: Kind,
    window: Window,
    limit: u64,
}

struct Rule {
    name: Arc<str>,
    selector: Selector,
    scope: Scope,
    limits: Vec<Limit>,
}

/// One counter touched by a reservation.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: String,
    pub limit: u64,
    pub amount: u64,
    /// Unix seconds when the window ends.
    pub expires: u64,
    kind: Kind,
    rule: usize,
    window: Window,
}

/// Where a reservation was made, so it is settled in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Redis,
}

#[derive(Debug)]
pub struct Reservation {
    items: Vec<Item>,
    reserved: Charge,
    store: Store,
}

impl Reservation {
    pub fn reserved(&self) -> Charge {
        self.reserved
    }

    /// Whether any budget applied to this request.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub budget: Arc<str>,
    /// e.g. `tokens per minute`.
    pub limit: String,
    pub retry_after: Duration,
    /// Tokens still left in the limit that refused, when it counts tokens: a call asking for
    /// less output may still fit.
    pub tokens_left: Option<u64>,
}

pub struct Budgets {
    rules: Vec<Rule>,
    memory: Arc<memory::Memory>,
    redis: Option<redis::Redis>,
    /// Unix seconds of the last "Redis unreachable" warning (to keep the log readable).
    last_warning: AtomicU64,
    pub fallbacks: prometheus_client::metrics::counter::Counter,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Budgets {
    pub fn new(
        budgets: &[Budget],
        redis_url: Option<&str>,
        fallbacks: prometheus_client::metrics::counter::Counter,
        memory: Option<Arc<memory::Memory>>,
    ) -> Self {
        let rules = budgets
            .iter()
            .map(|b| {
                let mut limits = Vec::new();
                let mut add = |kind, window, v: Option<u64>| {
                    if let Some(limit) = v {
                        limits.push(Limit { kind, window, limit });
                    }
                };
                add(Kind::Requests, Window::Minute, b.requests_per_minute);
                add(Kind::Tokens, Window::Minute, b.tokens_per_minute);
                add(Kind::Tokens, Window::Hour, b.tokens_per_hour);
                add(Kind::Tokens, Window::Day, b.tokens_per_day);
                add(Kind::Tokens, Window::Month, b.tokens_per_month);
                let usd = |v: Option<f64>| v.map(|d| (d * 1e6).round() as u64);
                add(Kind::Cost, Window::Day, usd(b.cost_per_day_usd));
                add(Kind::Cost, Window::Month, usd(b.cost_per_month_usd));
                Rule {
                    name: b.name.as_str().into(),
                    selector: Selector::new(&b.selector),
                    scope: b.scope,
                    limits,
                }
            })
            .collect();
        let redis = match redis_url {
            None => None,
            Some(url) => match redis::Redis::new(url) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "invalid redis URL; budgets use local counters");
                    None
                }
            },
        };
        Self { rules, memory: memory.unwrap_or_default(), redis, last_warning: AtomicU64::new(0), fallbacks }
    }

    fn items(&self, id: &Identity, charge: Charge, now: u64) -> Vec<Item> {
        let mut items = Vec::new();
        for (r, rule) in self.rules.iter().enumerate() {
            if !rule.selector.matches(id) {
                continue;
            }
            // Per caller: by principal when the budget names principals only, else by the
            // workload the kernel named (so presenting a key or not never buys a second budget).
            let scope = match rule.scope {
                Scope::Workload if rule.selector.by_principal() => id.principal.as_deref().unwrap_or("-"),
                Scope::Workload => &*id.workload,
                Scope::Shared => "*",
            };
            for l in &rule.limits {
                let (start, end) = l.window.bounds(now);
                let (kind, amount) = match l.kind {
                    Kind::Requests => ("req", charge.requests),
                    Kind::Tokens => ("tok", charge.tokens),
                    Kind::Cost => ("usd", charge.micro_usd),
                };
                items.push(Item {
                    // One hash tag for every budget key: a reservation that spans several
                    // budgets is one atomic script, which Redis Cluster runs only on one slot.
                    key: format!(
                        "{{nodegate-budgets}}:{}:{}:{kind}:{}:{start}",
                        rule.name,
                        scope,
                        l.window.label()
                    ),
                    limit: l.limit,
                    amount,
                    expires: end,
                    kind: l.kind,
                    rule: r,
                    window: l.window,
                });
            }
        }
        items
    }

    fn warn_fallback(&self, e: &dyn std::fmt::Display) {
        self.fallbacks.inc();
        let now = now_secs();
        if now.saturating_sub(self.last_warning.swap(now, Ordering::Relaxed)) >= 10 {
            tracing::warn!(error = %e, "redis budget backend unreachable: enforcing budgets with this node's local counters");
        }
    }

    /// The local counters, for the next config version to keep.
    pub fn memory(&self) -> Arc<memory::Memory> {
        self.memory.clone()
    }

    /// Whether any budget applies to `id`.
    pub fn applies(&self, id: &Identity) -> bool {
        self.rules.iter().any(|r| r.selector.matches(id))
    }

    /// Reserves `charge` against every budget that applies to `id`.
    pub async fn reserve(&self, id: &Identity, charge: Charge) -> Result<Reservation, Refusal> {
        let now = now_secs();
        let items = self.items(id, charge, now);
        if items.is_empty() {
            return Ok(Reservation { items, reserved: charge, store: Store::Memory });
        }
        let (result, store) = match &self.redis {
            Some(r) => match r.reserve(&items, now).await {
                Ok(res) => (res, Store::Redis),
                Err(e) => {
                    self.warn_fallback(&e);
                    (self.memory.reserve(now, &items), Store::Memory)
                }
            },
            None => (self.memory.reserve(now, &items), Store::Memory),
        };
        match result {
            Ok(()) => Ok(Reservation { items, reserved: charge, store }),
            Err((i, left)) => {
                let it = &items[i];
                let what = match it.kind {
                    Kind::Requests => "requests",
                    Kind::Tokens => "tokens",
                    Kind::Cost => "cost",
                };
                Err(Refusal {
                    budget: self.rules[it.rule].name.clone(),
                    limit: format!("{what} per {}", it.window.label()),
                    retry_after: Duration::from_secs(it.expires.saturating_sub(now).max(1)),
                    tokens_left: (it.kind == Kind::Tokens).then_some(left),
                })
            }
        }
    }

    /// Replaces the reserved amounts with what the request really used.
    pub async fn settle(&self, r: Reservation, actual: Charge) {
        let now = now_secs();
        let deltas: Vec<(String, i64, u64)> = r
            .items
            .iter()
            .filter_map(|it| {
                let (was, is) = match it.kind {
                    Kind::Requests => (r.reserved.requests, actual.requests),
                    Kind::Tokens => (r.reserved.tokens, actual.tokens),
                    Kind::Cost => (r.reserved.micro_usd, actual.micro_usd),
                };
                (was != is).then(|| (it.key.clone(), is as i64 - was as i64, it.expires))
            })
            .collect();
        if deltas.is_empty() {
            return;
        }
        match (r.store, &self.redis) {
            (Store::Redis, Some(redis)) => {
                if let Err(e) = redis.adjust(&deltas).await {
                    self.warn_fallback(&e);
                }
            }
            _ => self.memory.adjust(now, &deltas),
        }
    }

    /// Current local value of a counter (tests and the admin page).
    pub fn local_value(&self, key: &str) -> u64 {
        self.memory.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn budgets(tokens_per_minute: u64) -> Budgets {
        let b = Budget {
            name: "team".into(),
            selector: config::Selector { workloads: vec!["agent-*".into()], ..Default::default() },
            scope: Scope::Shared,
            requests_per_minute: None,
            tokens_per_minute: Some(tokens_per_minute),
            tokens_per_hour: None,
            tokens_per_day: None,
            tokens_per_month: None,
            cost_per_day_usd: None,
            cost_per_month_usd: None,
        };
        Budgets::new(&[b], None, Default::default(), None)
    }

    #[tokio::test]
    async fn concurrent_reservations_never_overshoot_and_settle_trues_up() {
        let b = Arc::new(budgets(1000));
        let id = Identity::named("agent-a");
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (b, id) = (b.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                b.reserve(&id, Charge { requests: 1, tokens: 30, micro_usd: 0 }).await
            }));
        }
        let mut admitted = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await.unwrap() {
                admitted.push(r);
            }
        }
        assert_eq!(admitted.len(), 33, "1000 / 30 = 33 reservations fit");
        // Each really used 10 tokens: settling frees room for more.
        for r in admitted {
            b.settle(r, Charge { requests: 1, tokens: 10, micro_usd: 0 }).await;
        }
        let more = b.reserve(&id, Charge { requests: 1, tokens: 600, micro_usd: 0 }).await;
        assert!(more.is_ok(), "330 used + 600 fits in 1000");
        let refused = b.reserve(&id, Charge { requests: 1, tokens: 100, micro_usd: 0 }).await.unwrap_err();
        assert_eq!(&*refused.budget, "team");
        assert_eq!(refused.limit, "tokens per minute");
        assert!(refused.retry_after <= Duration::from_secs(60));
        // A workload the selector does not match is not limited.
        assert!(
            b.reserve(&Identity::named("other"), Charge { requests: 1, tokens: 5000, micro_usd: 0 })
                .await
                .unwrap()
                .is_empty()
        );
    }
}
