//! Reads every endpoint's metrics on an interval. A failed or slow scrape counts toward
//! ejection; an ejected endpoint keeps being scraped (that is its probe) and comes back on the
//! first success.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use super::{PoolState, signals};
use crate::proxy::upstream::Dialer;

/// Largest metrics page read from a model server; a larger one is a failed scrape. vLLM's
/// page is about 30 KB, SGLang's and TGI's smaller.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// Scrapes `pool` until `stop` fires.
pub async fn run(pool: Arc<PoolState>, dialer: Dialer, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client: Client<Dialer, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build(dialer);
    let every = pool.cfg.scrape_interval;
    let timeout = (every * 5).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let members = pool.members();
        let rounds = members.endpoints.iter().map(|ep| {
            let client = client.clone();
            let pool = pool.clone();
            let ep = ep.clone();
            async move {
                let got = tokio::time::timeout(timeout, async {
                    let uri: hyper::Uri = ep.metrics_url.parse().map_err(|e| format!("{e}"))?;
                    let resp = client.get(uri).await.map_err(|e| format!("{e}"))?;
                    if !resp.status().is_success() {
                        return Err(format!("status {}", resp.status()));
                    }
                    let body = http_body_util::Limited::new(resp.into_body(), MAX_PAGE_BYTES)
                        .collect()
                        .await
                        .map_err(|e| format!("{e} (pages are read up to {MAX_PAGE_BYTES} bytes)"))?
                        .to_bytes();
                    Ok::<_, String>(signals::parse(&String::from_utf8_lossy(&body)))
                })
                .await;
                match got {
                    Ok(Ok(s)) => ep.record_scrape(&s, pool.now_ms()),
                    Ok(Err(e)) => {
                        tracing::debug!(endpoint = %ep.address, error = %e, "metrics scrape failed");
                        ep.failed(pool.cfg.eject_after);
                    }
                    Err(_) => ep.failed(pool.cfg.eject_after),
                }
            }
        });
        futures_util::future::join_all(rounds).await;
        pool.scraped.store(true, std::sync::atomic::Ordering::Release);
    }
}
