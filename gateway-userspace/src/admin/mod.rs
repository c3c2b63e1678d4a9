//! The admin server (loopback): `/healthz` (the process serves), `/readyz` (listeners bound and,
//! when interception is on, programs attached), `/metrics` (Prometheus text), `/config_dump`
//! (the live config as JSON), `/intercept/status` (what the kernel holds) and `/mcp/servers`
//! (each federated MCP server's transport, era and health). Secrets in the config dump are
//! `[redacted]` (one `config::Secret` type). With `admin.token` set, everything but the two
//! health endpoints needs `Authorization: Bearer TOKEN`; a non-loopback address needs a token.
//! Nothing here changes state.
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::proxy::Ctx;

pub struct Admin {
    pub ctx: Arc<Ctx>,
    /// Set once listeners are bound and programs attached; cleared on shutdown.
    pub ready: Arc<AtomicBool>,
    /// Latched once every start-up check passed: a later reload that restarts an MCP server
    /// or a pool does not make the node agent unready.
    pub started: AtomicBool,
}

/// Serves until `shutdown`; run it on its own runtime (`dedicated`), which `listener` joins here.
pub async fn run(
    admin: Arc<Admin>,
    listener: std::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener cannot be served");
            return;
        }
    };
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(admin.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

/// Whether the request carries the admin token (when one is configured). Compared as SHA-256
/// digests in constant time.
fn authorized(ctx: &Ctx, req: &Request<Incoming>) -> bool {
    use crate::identity::credentials::{bearer, secret_matches};
    let cfg = ctx.config.load();
    let Some(token) = cfg.admin.token.as_ref() else { return true };
    let presented = bearer(req.headers(), &header::AUTHORIZATION).unwrap_or("");
    secret_matches(presented, token.expose())
}

/// The live dashboard: one page, no external assets (it works offline).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Each pool endpoint's load as the picker sees it now.
fn pool_load(ctx: &Ctx) -> serde_json::Value {
    let mut out = Vec::new();
    for pool in ctx.pools.load().pools.iter() {
        let now = pool.now_ms();
        let stale = pool.cfg.stale_after.as_millis() as u64;
        for ep in &pool.members().endpoints {
            let l = ep.load(now, stale);
            out.push(serde_json::json!({
                "pool": &*pool.name, "endpoint": &*ep.address, "local": ep.local,
                "waiting": l.waiting, "running": l.running, "kv_cache": l.kv_cache, "in_flight": l.in_flight,
                "ejected": ep.ejected.load(std::sync::atomic::Ordering::Relaxed),
            }));
        }
    }
    serde_json::Value::Array(out)
}

async fn handle(admin: Arc<Admin>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ctx = &admin.ctx;
    // The dashboard page holds no data (it fetches /dashboard/data, which needs the token).
    let open = matches!(req.uri().path(), "/healthz" | "/readyz" | "/dashboard");
    if !open && !authorized(ctx, &req) {
        let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "admin token required\n".into());
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    Ok(match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/dashboard" => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.into()),
        "/dashboard/data" => {
            let mut data = ctx.audit.live().snapshot();
            data["pools"] = pool_load(ctx);
            reply(StatusCode::OK, "application/json", data.to_string())
        }
        "/readyz" => readyz(&admin),
        "/readyz/detail" => {
            let (ready, detail) = readiness(&admin);
            let body = serde_json::to_string_pretty(&detail).unwrap_or_default() + "\n";
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            reply(status, "application/json", body)
        }
        "/pods" => match &ctx.cluster {
            None => reply(StatusCode::NOT_FOUND, "text/plain", "kubernetes is not enabled\n".into()),
            Some(c) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&crate::k8s::status::report(c)).unwrap_or_default() + "\n",
            ),
        },
        "/metrics" => {
            refresh_intercept_metrics(ctx);
            if let Some(c) = &ctx.cluster {
                ctx.metrics.k8s.refresh(c);
            }
            ctx.mcp.load().export_health();
            // OpenMetrics for a scraper that asks for it (Prometheus does); the Prometheus text
            // format (0.0.4) otherwise, which promtool and older scrapers read.
            let openmetrics = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            match ctx.metrics.encode() {
                Ok(text) if openmetrics => {
                    reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text)
                }
                Ok(text) => reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::telemetry::metrics::prometheus_text(&text),
                ),
                Err(e) => {
                    reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("encoding metrics: {e}\n"))
                }
            }
        }
        "/mcp/servers" => {
            let body = serde_json::to_string_pretty(&ctx.mcp.load().status()).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body + "\n")
        }
        "/config_dump" => match serde_json::to_string_pretty(&**ctx.config.load()) {
            Ok(j) => reply(StatusCode::OK, "application/json", j),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        "/intercept/status" => match &ctx.interceptor {
            None => reply(StatusCode::NOT_FOUND, "text/plain", "interception is not enabled\n".into()),
            Some(i) => match crate::intercept::status::read(i.pin_dir()) {
                Ok(s) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_string_pretty(&s).unwrap_or_default(),
                ),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            },
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz /readyz /readyz/detail /metrics /config_dump /intercept/status /mcp/servers /pods\n"
                .into(),
        ),
    })
}

/// What readiness is made of, each part with its state: listeners bound and programs attached
/// (the process got that far), every stdio/SSE MCP server through its first start (started, or
/// failed and why), every inference pool scraped once. Returns whether all start-up checks
/// passed (Kubernetes is judged apart, in [`readyz`]).
fn readiness(admin: &Admin) -> (bool, serde_json::Value) {
    use serde_json::json;
    let ctx = &admin.ctx;
    let cfg = ctx.config.load();
    let up = admin.ready.load(Ordering::Acquire);
    let mcp = ctx.mcp.load();
    let servers: Vec<_> = mcp
        .catalog
        .servers
        .iter()
        .map(|s| {
            let st = s.startup();
            let (state, why) = crate::mcp::startup_label(&st);
            json!({"name": &*s.name, "transport": s.transport, "startup": state, "error": why})
        })
        .collect();
    let servers_settled =
        mcp.catalog.servers.iter().all(|s| s.startup() != crate::mcp::upstream::channel::Startup::Starting);
    let pools = ctx.pools.load();
    let pool_view: Vec<_> = pools
        .pools
        .iter()
        .map(|p| {
            json!({
                "name": &*p.name,
                "scraped": p.scraped.load(Ordering::Acquire),
                "endpoints": p.members().endpoints.len(),
            })
        })
        .collect();
    let pools_scraped = pools.pools.iter().all(|p| p.scraped.load(Ordering::Acquire));
    let interception = ctx.interceptor.as_ref().map(
        |i| json!({"programs_attached": true, "cgroups": i.attached_cgroups(), "entries": i.table_len()}),
    );
    // Tokens from a `jwks_url` can be checked once the keys were fetched a first time.
    let jwt_keys = ctx.identities.keys().jwt.as_ref().map(|v| v.key_count());
    let jwks_fetched = jwt_keys.is_none_or(|n| n > 0);
    let ready =
        up && (admin.started.load(Ordering::Acquire) || (servers_settled && pools_scraped && jwks_fetched));
    if ready {
        admin.started.store(true, Ordering::Release);
    }
    let detail = json!({
        "ready": ready,
        "listeners": {
            "bound": up,
            "explicit": cfg.listeners.explicit,
            "transparent": cfg.listeners.transparent,
            "admin": cfg.admin.address,
        },
        "interception": interception,
        "mcp_servers": servers,
        "pools": pool_view,
        "jwt": jwt_keys.map(|n| json!({"keys": n})),
        "kubernetes": ctx.cluster.as_ref().map(|c| match c.health(cfg.kubernetes.stale_after) {
            Ok(()) => "connected".to_string(),
            Err(detail) => detail,
        }),
    });
    (ready, detail)
}

/// Ready once the listeners are up (and programs attached), every MCP server nodegate starts has
/// started or failed, every inference pool was scraped once, the JWKS of `jwt.jwks_url` was
/// fetched once (tokens cannot be checked before) and, with Kubernetes on, both
/// watches have listed once. An API server gone away later does not make the agent unready (it
/// serves its last good view, which is what a node agent must do); the body says so.
/// `/readyz/detail` shows each part.
fn readyz(admin: &Admin) -> Response<Full<Bytes>> {
    if !admin.ready.load(Ordering::Acquire) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into());
    }
    let (ready, detail) = readiness(admin);
    if !ready {
        let mut waiting = Vec::new();
        for s in detail["mcp_servers"].as_array().into_iter().flatten() {
            if s["startup"] == "starting" {
                waiting.push(format!("mcp server {} starting", s["name"].as_str().unwrap_or("")));
            }
        }
        for p in detail["pools"].as_array().into_iter().flatten() {
            if p["scraped"] == false {
                waiting.push(format!("pool {} not scraped yet", p["name"].as_str().unwrap_or("")));
            }
        }
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("not ready\n{}\n", waiting.join("\n")),
        );
    }
    let Some(c) = &admin.ctx.cluster else {
        return reply(StatusCode::OK, "text/plain", "ready\n".into());
    };
    let stale_after = admin.ctx.config.load().kubernetes.stale_after;
    let synced = c.store.pods_health.report().synced && c.store.namespaces_health.report().synced;
    match c.health(stale_after) {
        Ok(()) => reply(StatusCode::OK, "text/plain", "ready\nkubernetes: connected\n".into()),
        Err(detail) if synced => reply(StatusCode::OK, "text/plain", format!("ready (degraded)\n{detail}\n")),
        Err(detail) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready\n{detail}\n")),
    }
}

/// Copies state kept elsewhere (the kernel's counters, the heartbeat age, the inference
/// endpoints' load) into the registry before a scrape.
fn refresh_intercept_metrics(ctx: &Ctx) {
    // Endpoints come and go with the cluster: only the current ones keep series.
    ctx.metrics.llm.endpoint_load.clear();
    ctx.metrics.llm.pool_endpoints.clear();
    for pool in ctx.pools.load().pools.iter() {
        let now = pool.now_ms();
        let stale = pool.cfg.stale_after.as_millis() as u64;
        let members = pool.members();
        for local in [true, false] {
            let n = members.endpoints.iter().filter(|e| e.local == local).count();
            let labels = crate::telemetry::llm_metrics::PoolPlace {
                pool: pool.name.clone(),
                node: if local { "local" } else { "remote" },
            };
            ctx.metrics.llm.pool_endpoints.get_or_create(&labels).set(n as i64);
        }
        for ep in &members.endpoints {
            let l = ep.load(now, stale);
            let ejected = if ep.ejected.load(std::sync::atomic::Ordering::Relaxed) { 1.0 } else { 0.0 };
            for (signal, v) in [
                ("waiting", l.waiting),
                ("running", l.running),
                ("kv_cache", l.kv_cache),
                ("in_flight", l.in_flight),
                ("ejected", ejected),
            ] {
                let labels = crate::telemetry::llm_metrics::EndpointSignal {
                    pool: pool.name.clone(),
                    endpoint: ep.address.clone(),
                    signal,
                };
                ctx.metrics.llm.endpoint_load.get_or_create(&labels).set(v);
            }
        }
    }
    let Some(i) = &ctx.interceptor else { return };
    if let Ok(counters) = crate::intercept::status::read_counters(i.pin_dir()) {
        for (i, (_, v)) in counters.iter().enumerate() {
            ctx.metrics.set_redirect_counter(gateway_common::stats::NAMES[i], *v);
        }
    }
    if let Some(age) = crate::intercept::status::heartbeat_age(i.pin_dir()) {
        ctx.metrics.heartbeat_age.set(age);
    }
    ctx.metrics.intercept_entries.set(i.table_len() as i64);
}
