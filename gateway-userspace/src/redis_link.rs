//! One Redis connection a feature shares (budget counters, A2A task owners), with a breaker:
//! after a failure (an error, or no answer within the operation timeout) Redis is not asked
//! again for [`RETRY`], and the connection is made afresh when it is. While Redis is away each
//! caller falls back at once instead of paying the timeout on every request, and a restarted
//! Redis is used again within [`RETRY`] of coming back.
use std::{
    sync::Mutex as SyncMutex,
    time::{Duration, Instant},
};

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

/// Time allowed for one Redis round trip.
pub const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long Redis is left alone after a failure.
pub const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis failed less than {0:?} ago; not asked")]
    Resting(Duration),
}

pub struct Link {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    rest_until: SyncMutex<Option<Instant>>,
}

impl Link {
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            rest_until: SyncMutex::new(None),
        })
    }

    fn resting(&self) -> bool {
        let g = self.rest_until.lock().unwrap_or_else(|e| e.into_inner());
        g.is_some_and(|t| Instant::now() < t)
    }

    /// A connection, unless Redis failed within [`RETRY`].
    pub async fn get(&self) -> Result<ConnectionManager, LinkError> {
        if self.resting() {
            return Err(LinkError::Resting(RETRY));
        }
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let made = tokio::time::timeout(OP_TIMEOUT * 2, self.client.get_connection_manager()).await;
        match made {
            Ok(Ok(c)) => {
                *guard = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                drop(guard);
                self.failed().await;
                Err(e.into())
            }
            Err(_) => {
                drop(guard);
                self.failed().await;
                Err(LinkError::Timeout(OP_TIMEOUT * 2))
            }
        }
    }

    /// Runs one operation with the timeout; a failure rests the link.
    pub async fn run<T, F>(&self, op: F) -> Result<T, LinkError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed().await;
                Err(e.into())
            }
            Err(_) => {
                self.failed().await;
                Err(LinkError::Timeout(OP_TIMEOUT))
            }
        }
    }

    /// Rests the link for [`RETRY`] and forgets the connection (the next one is made afresh).
    pub async fn failed(&self) {
        *self.rest_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + RETRY);
        *self.conn.lock().await = None;
    }
}
