//! Task owners shared across replicas through Redis (`a2a.redis_url`), so a caller that created
//! a task through one nodegate can follow it through another, and nobody else can through any.
//! One key per task (`nodegate:a2a:<agent>:<task>` -> owner), set only if absent, expiring after
//! `a2a.task_ttl`. Redis that does not answer in time counts as "not found" on a lookup (fail
//! closed) and leaves a record to this node only.
use std::time::Duration;

use crate::redis_link::Link;

pub struct Shared {
    link: Link,
}

fn key(agent: &str, task: &str) -> String {
    format!("nodegate:a2a:{agent}:{task}")
}

impl Shared {
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self { link: Link::new(url)? })
    }

    async fn conn(&self) -> Option<redis::aio::ConnectionManager> {
        match self.link.get().await {
            Ok(c) => Some(c),
            Err(crate::redis_link::LinkError::Resting(_) | crate::redis_link::LinkError::Connecting) => None,
            Err(e) => {
                tracing::warn!(error = %e, "a2a: redis for task owners unreachable");
                None
            }
        }
    }

    /// Records `owner` for the task unless one is recorded; returns the owner now on record
    /// (None when Redis could not be asked).
    pub async fn record(&self, agent: &str, task: &str, owner: &str, ttl: Duration) -> Option<String> {
        let mut con = self.conn().await?;
        let k = key(agent, task);
        let secs = ttl.as_secs().max(1);
        let set = self
            .link
            .run(
                redis::cmd("SET")
                    .arg(&k)
                    .arg(owner)
                    .arg("NX")
                    .arg("GET")
                    .arg("EX")
                    .arg(secs)
                    .query_async::<Option<String>>(&mut con),
            )
            .await;
        match set {
            // NX with GET: nil when it was set now, the old value when one was there.
            Ok(None) => Some(owner.to_string()),
            Ok(Some(existing)) => Some(existing),
            Err(e) => {
                tracing::warn!(error = %e, "a2a: recording a task owner in redis failed");
                None
            }
        }
    }

    /// The owner on record for the task, refreshing its expiry (None: none, or Redis away).
    pub async fn owner(&self, agent: &str, task: &str, ttl: Duration) -> Option<String> {
        let mut con = self.conn().await?;
        let got = self
            .link
            .run(
                redis::cmd("GETEX")
                    .arg(key(agent, task))
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async::<Option<String>>(&mut con),
            )
            .await;
        got.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a2a: reading a task owner from redis failed");
            None
        })
    }
}
