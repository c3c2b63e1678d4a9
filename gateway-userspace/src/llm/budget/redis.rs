//! Budget counters in Redis, shared by every node: reservation and correction are Lua scripts,
//! so the check and the increment are one atomic step however many gateways race.
use redis::Script;

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

pub struct Redis {
    link: crate::redis_link::Link,
    reserve: Script,
    adjust: Script,
}

pub type RedisError = crate::redis_link::LinkError;

impl Redis {
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            link: crate::redis_link::Link::new(url)?,
            reserve: Script::new(RESERVE),
            adjust: Script::new(ADJUST),
        })
    }

    /// Ok(Err((index, left))): the item that would go over its limit, and what is left in it.
    pub async fn reserve(&self, items: &[Item], now: u64) -> Result<Result<(), (usize, u64)>, RedisError> {
        let mut con = self.link.get().await?;
        let mut inv = self.reserve.prepare_invoke();
        for it in items {
            inv.key(&it.key).arg(it.limit).arg(it.amount).arg(it.expires.saturating_sub(now).max(1));
        }
        let (r, cur): (i64, i64) = self.link.run(inv.invoke_async(&mut con)).await?;
        Ok(if r <= 0 {
            Ok(())
        } else {
            let i = (r - 1) as usize;
            let left = items.get(i).map_or(0, |it| it.limit.saturating_sub(cur.max(0) as u64));
            Err((i, left))
        })
    }

    pub async fn adjust(&self, items: &[(String, i64, u64)]) -> Result<(), RedisError> {
        let mut con = self.link.get().await?;
        let mut inv = self.adjust.prepare_invoke();
        for (k, d, _) in items {
            inv.key(k).arg(*d);
        }
        let _: i64 = self.link.run(inv.invoke_async(&mut con)).await?;
        Ok(())
    }
}
