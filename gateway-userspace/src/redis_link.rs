//! One Redis connection a feature shares (budget counters, A2A task owners), with a breaker:
//! after a failure (an error, or no answer within the operation timeout) Redis is not asked
//! again for [`RETRY`], and the connection is made afresh when it is. While Redis is away each
//! caller falls back at once instead of paying the timeout on every request, and a restarted
//! Redis is used again within [`RETRY`] of coming back.
use std::{
    sync::{
        Mutex as SyncMutex,
        atomic::{AtomicBool, Ordering},
    },
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
    #[error("redis is being connected to by another request; not asked")]
    Connecting,
}

pub struct Link {
    client: redis::Client,
    /// The connection in use (a clone per operation; never held across an await).
    conn: SyncMutex<Option<ConnectionManager>>,
    /// Held by the one request making a connection.
    connecting: Mutex<()>,
    /// Set by a failure, cleared by a connection: while set, requests do not wait for a
    /// reconnect in progress (they fall back); at first start they do.
    recovering: AtomicBool,
    rest_until: SyncMutex<Option<Instant>>,
}

impl Link {
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: SyncMutex::new(None),
            connecting: Mutex::new(()),
            recovering: AtomicBool::new(false),
            rest_until: SyncMutex::new(None),
        })
    }

    fn resting(&self) -> bool {
        let g = self.rest_until.lock().unwrap_or_else(|e| e.into_inner());
        g.is_some_and(|t| Instant::now() < t)
    }

    fn cached(&self) -> Option<ConnectionManager> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A connection, unless Redis failed within [`RETRY`].
    pub async fn get(&self) -> Result<ConnectionManager, LinkError> {
        if self.resting() {
            return Err(LinkError::Resting(RETRY));
        }
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        // One request connects. At first start the others wait for it; after a failure they
        // fall back at once (a connect to an absent Redis can take the whole timeout).
        let _connecting = if self.recovering.load(Ordering::Acquire) {
            self.connecting.try_lock().map_err(|_| LinkError::Connecting)?
        } else {
            self.connecting.lock().await
        };
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        match tokio::time::timeout(OP_TIMEOUT * 2, self.client.get_connection_manager()).await {
            Ok(Ok(c)) => {
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                self.recovering.store(false, Ordering::Release);
                Ok(c)
            }
            Ok(Err(e)) => {
                self.failed();
                Err(e.into())
            }
            Err(_) => {
                self.failed();
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
                self.failed();
                Err(e.into())
            }
            Err(_) => {
                self.failed();
                Err(LinkError::Timeout(OP_TIMEOUT))
            }
        }
    }

    /// Rests the link for [`RETRY`] and forgets the connection (the next one is made afresh).
    pub fn failed(&self) {
        *self.rest_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + RETRY);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.recovering.store(true, Ordering::Release);
    }
}
