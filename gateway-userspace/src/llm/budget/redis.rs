//! Budget counters in Redis, shared by every node: reservation and correction are Lua scripts,
//! so the check and the increment are one atomic step however many gateways race.
use std::time::Duration;

use redis::{Script, aio::ConnectionManager};
use tokio::sync::Mutex;

use super::Item;

const RESERVE: &str = r#"
for i = 1, #KEYS do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  if cur + tonumber(ARGV[3*i-1]) > tonumber(ARGV[3*i-2]) then return {i, cur} end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[3*i-1])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3*i]) end
end
return {0, 0}
"#;

const ADJUST: &str = r#"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], ARGV[i]) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 0
"#;

/// Time allowed for one Redis round trip before falling back to local counters.
const OP_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Redis {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    reserve: Script,
    adjust: Script,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

impl Redis {
    pub fn new(url: &str) -> Result<Self, RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            reserve: Script::new(RESERVE),
            adjust: Script::new(ADJUST),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(OP_TIMEOUT * 4, self.client.get_connection_manager())
            .await
            .map_err(|_| RedisError::Timeout(OP_TIMEOUT * 4))??;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Ok(Err((index, left))): the item that would go over its limit, and what is left in it.
    pub async fn reserve(&self, items: &[Item], now: u64) -> Result<Result<(), (usize, u64)>, RedisError> {
        let mut con = self.conn().await?;
        let mut inv = self.reserve.prepare_invoke();
        for it in items {
            inv.key(&it.key).arg(it.limit).arg(it.amount).arg(it.expires.saturating_sub(now).max(1));
        }
        let (r, cur): (i64, i64) = tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut con))
            .await
            .map_err(|_| RedisError::Timeout(OP_TIMEOUT))??;
        Ok(if r <= 0 {
            Ok(())
        } else {
            let i = (r - 1) as usize;
            let left = items.get(i).map_or(0, |it| it.limit.saturating_sub(cur.max(0) as u64));
            Err((i, left))
        })
    }

    pub async fn adjust(&self, items: &[(String, i64, u64)]) -> Result<(), RedisError> {
        let mut con = self.conn().await?;
        let mut inv = self.adjust.prepare_invoke();
        for (k, d, _) in items {
            inv.key(k).arg(*d);
        }
        let _: i64 = tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut con))
            .await
            .map_err(|_| RedisError::Timeout(OP_TIMEOUT))??;
        Ok(())
    }
}
