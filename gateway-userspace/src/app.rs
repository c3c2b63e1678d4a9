//! Wires the pieces into a running gateway: config -> logs -> metrics and audit -> identity ->
//! listeners -> interception (after the listeners, so nothing is redirected to a closed port) ->
//! heartbeat and hot reload -> wait for a signal -> detach, drain, flush.
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::{
    admin, config,
    identity::{self, Resolver},
    intercept::Interceptor,
    proxy::{self, Ctx, upstream},
    telemetry::{
        audit, logging,
        metrics::{Metrics, OutcomeLabels},
    },
};

pub async fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = config::load(config_path.as_deref())?;
    let debug = logging::init(&cfg.log);
    tracing::info!(
        config = %config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded default".into()),
        version = env!("CARGO_PKG_VERSION"),
        "nodegate starting"
    );
    let metrics = Metrics::new();
    if !cfg.llm.providers.is_empty()
        || cfg.intercept.destinations.iter().any(|d| d.class == config::Class::Llm)
    {
        tokio::task::spawn_blocking(crate::llm::tokens::warm);
    }
    for w in config::warnings(&cfg) {
        tracing::warn!(path = %w.path, "config: {}", w.message);
    }
    let (audit, audit_task) = audit::start(&cfg.audit, metrics.clone())
        .with_context(|| format!("opening audit output {:?}", cfg.audit.path))?;
    let (audit, traces_task) = match crate::telemetry::spans::Spans::start(&cfg.traces, metrics.clone())? {
        Some((spans, task)) => {
            tracing::info!(endpoint = ?cfg.traces.endpoint, protocol = ?cfg.traces.protocol, "exporting traces over OTLP");
            (audit.with_spans(spans), Some(task))
        }
        None => (audit, None),
    };
    let cgroup_root = cfg.intercept.cgroup_root.clone().or_else(identity::detect_cgroup2_root);
    let identities = Arc::new(Resolver::new(cgroup_root.clone(), &cfg.identities, &search_first(&cfg)));
    let jwt = cfg
        .jwt
        .as_ref()
        .map(crate::identity::jwt::JwtVerifier::new)
        .transpose()
        .context("jwt: the issuer's keys")?
        .map(Arc::new);
    identities.update_with_jwt(&cfg.identities, &search_first(&cfg), jwt.clone());

    // The node-local address pods are redirected to must exist before a listener binds it.
    let node_address = match cfg.kubernetes.node_address.filter(|_| cfg.kubernetes.enabled) {
        Some(addr) => {
            let placed = crate::k8s::address::ensure(addr, &cfg.kubernetes.node_interface)
                .with_context(|| format!("putting the node-local address {addr} in place"))?;
            tracing::info!(%addr, interface = %placed.interface, created = placed.created_interface, "node-local address in place");
            Some((addr, placed))
        }
        None => None,
    };
    let explicit = cfg
        .listeners
        .explicit
        .map(|a| {
            proxy::bind(a, cfg.listeners.reuse_port)
                .with_context(|| format!("binding the explicit listener on {a}"))
        })
        .transpose()?;
    let transparent = cfg
        .listeners
        .transparent
        .map(|a| {
            proxy::bind(a, cfg.listeners.reuse_port)
                .with_context(|| format!("binding the transparent listener on {a}"))
        })
        .transpose()?;
    let admin_listener = proxy::bind_std(cfg.admin.address, cfg.listeners.reuse_port)
        .with_context(|| format!("binding the admin listener on {}", cfg.admin.address))?;
    let own: Vec<_> = [explicit.as_ref(), transparent.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|l| l.local_addr().ok())
        .chain(admin_listener.local_addr().ok())
        .collect();

    let interceptor = if cfg.intercept.enabled && cfg.intercept.mode == config::InterceptMode::Ebpf {
        let i = Interceptor::start(&cfg, debug).context("starting transparent interception")?;
        tracing::info!(cgroups = i.attached_cgroups(), entries = i.table_len(), pin_dir = %i.pin_dir().display(), fail = ?cfg.intercept.fail, "interception active");
        Some(i)
    } else {
        if cfg.intercept.enabled {
            tracing::info!(
                mark = format_args!("{:#x}", cfg.intercept.proxy_mark),
                "iptables mode: the node's nat rules redirect to the transparent listener; exclude this mark from them"
            );
        }
        None
    };
    let cluster = if cfg.kubernetes.enabled {
        let target = interceptor.clone().map(|i| i as Arc<dyn crate::k8s::enroll::Target>);
        let root = cgroup_root.as_deref().filter(|_| target.is_some());
        let c = crate::k8s::Cluster::start(&cfg.kubernetes, root, target)
            .await
            .context("starting the kubernetes watches")?;
        identities.set_pods(c.store.clone());
        if let Some(i) = &interceptor {
            c.watch_services(&cfg.intercept.destinations, i.services(), resync_on_change(i));
        }
        Some(Arc::new(c))
    } else {
        None
    };
    let dialer = upstream::Dialer {
        mark: cfg.intercept.enabled.then_some(cfg.intercept.proxy_mark),
        timeout: cfg.timeouts.connect,
        own: Arc::new(proxy::egress::OwnAddrs::new(own.clone())),
    };
    let live: config::Shared = Arc::new(ArcSwap::from_pointee(cfg.clone()));
    let up = upstream::Upstream::new(dialer);
    let mcp = crate::mcp::Mcp::build(&cfg.mcp, &up, &metrics, None);
    let tls = crate::tls::Tls::build(&cfg, &metrics, None).context("setting up TLS")?;
    if let Some(ca) = &tls.ca {
        tracing::info!(fingerprint = %ca.fingerprint, "node CA loaded for TLS termination");
    }
    let pool_members = crate::inference::Found::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (deadline_tx, deadline_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        deadline: deadline_rx,
        admission: Arc::default(),
        stopping: stop_rx.clone(),
        tls: ArcSwap::from_pointee(tls),
        config: live.clone(),
        metrics: metrics.clone(),
        audit,
        identities: identities.clone(),
        interceptor: interceptor.clone(),
        cluster,
        upstream: up,
        mcp: ArcSwap::new(mcp),
        a2a: ArcSwap::from_pointee(crate::a2a::A2a::build(&cfg.a2a, None)),
        llm: ArcSwap::from_pointee(crate::llm::Llm::build(&cfg.llm, &metrics, None)),
        pools: ArcSwap::from_pointee(crate::inference::Pools::build(&cfg.inference, &pool_members)),
        pool_members: pool_members.clone(),
        egress: ArcSwap::from_pointee(proxy::egress::Egress::new(&cfg.egress)),
        policy: crate::policy::Engine::new(&cfg.policy),
        own,
    });
    if let Some(v) = &jwt {
        refresh_jwks(v, &ctx);
    }

    let tracker = TaskTracker::new();
    let mut servers = Vec::new();
    if let Some(l) = transparent {
        tracing::info!(address = %l.local_addr()?, "transparent listener");
        servers.push(tokio::spawn(proxy::transparent::run(ctx.clone(), l, tracker.clone(), stop_rx.clone())));
    }
    if let Some(l) = explicit {
        tracing::info!(address = %l.local_addr()?, "explicit proxy listener");
        servers.push(tokio::spawn(proxy::explicit::run(ctx.clone(), l, tracker.clone(), stop_rx.clone())));
    }
    if let Some(c) = &ctx.cluster {
        c.watch_pools(&cfg.inference, pool_sink(&ctx));
    }
    let scrapers = Arc::new(std::sync::Mutex::new(start_scrapers(&ctx, stop_rx.clone())));
    let ready = Arc::new(AtomicBool::new(false));
    tracing::info!(address = %admin_listener.local_addr()?, "admin listener");
    // Health probes and the heartbeat run where busy proxy workers cannot delay them.
    let admin_task = crate::dedicated::spawn(
        "nodegate-admin",
        admin::run(
            Arc::new(admin::Admin { ctx: ctx.clone(), ready: ready.clone(), started: Default::default() }),
            admin_listener,
            stop_rx.clone(),
        ),
    )
    .context("starting the admin thread")?;
    if let Some(i) = interceptor.clone() {
        crate::dedicated::spawn("nodegate-heartbeat", heartbeat(i, live.clone(), stop_rx.clone()))
            .context("starting the heartbeat thread")?;
    }
    let (changed_tx, mut changed_rx) = watch::channel(Arc::new(cfg.clone()));
    let composer = match &ctx.cluster {
        Some(c) if cfg.kubernetes.resources => {
            let own_namespace = std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
                .or_else(|| {
                    cfg.kubernetes
                        .daemonset
                        .as_deref()
                        .and_then(|d| d.split_once('/'))
                        .map(|(ns, _)| ns.to_string())
                })
                .unwrap_or_else(|| "default".into());
            let (composer, _tasks) = crate::k8s::resources::Composer::start(
                c.client.clone(),
                Arc::new(cfg.clone()),
                live.clone(),
                changed_tx.clone(),
                own_namespace,
                cfg.kubernetes.resync,
            );
            let _ = c.composer.set(composer.clone());
            Some(composer)
        }
        _ => None,
    };
    if let Some(path) = config_path.clone() {
        let m = metrics.clone();
        // A valid file goes live directly, or through the merge with the cluster's resources.
        let apply: Box<dyn Fn(Arc<config::Config>) + Send> = match composer.clone() {
            Some(c) => Box::new(move |cfg| c.set_file(cfg)),
            None => {
                let (live, tx) = (live.clone(), changed_tx.clone());
                Box::new(move |cfg| {
                    live.store(cfg.clone());
                    let _ = tx.send(cfg);
                })
            }
        };
        tokio::spawn(config::reload::watch_file(
            path,
            apply,
            std::time::Duration::from_secs(1),
            move |ok| {
                m.config_reloads
                    .get_or_create(&OutcomeLabels { outcome: if ok { "applied" } else { "rejected" } })
                    .inc();
            },
            stop_rx.clone(),
        ));
    }
    drop(changed_tx);
    if config_path.is_some() || composer.is_some() {
        let identities = identities.clone();
        let interceptor = interceptor.clone();
        let llm_ctx = ctx.clone();
        let scrapers = scrapers.clone();
        let stop_for_reload = stop_rx.clone();
        let mut last_inference = cfg.inference.clone();
        let started_with = cfg.clone();
        let mut jwt_cfg = cfg.jwt.clone();
        tokio::spawn(async move {
            while changed_rx.changed().await.is_ok() {
                let new = changed_rx.borrow_and_update().clone();
                // Tokens: a changed section (or a JWKS file, whose keys may have rotated) makes
                // a new verifier; one that cannot be made leaves the previous one in place.
                let jwt = match &new.jwt {
                    None => None,
                    Some(j) if Some(j) == jwt_cfg.as_ref() && j.jwks_file.is_none() => {
                        identities.keys().jwt.clone()
                    }
                    Some(j) => match crate::identity::jwt::JwtVerifier::new(j) {
                        Ok(v) => {
                            let v = Arc::new(v);
                            refresh_jwks(&v, &llm_ctx);
                            Some(v)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "jwt: the new settings cannot be used; keeping the previous ones");
                            identities.keys().jwt.clone()
                        }
                    },
                };
                jwt_cfg = new.jwt.clone();
                identities.update_with_jwt(&new.identities, &search_first(&new), jwt);
                let rebuilt = crate::llm::Llm::build(&new.llm, &llm_ctx.metrics, Some(&llm_ctx.llm.load()));
                llm_ctx.llm.store(Arc::new(rebuilt));
                llm_ctx.egress.store(Arc::new(proxy::egress::Egress::new(&new.egress)));
                llm_ctx.policy.rules.store(Arc::new(crate::policy::Rules::build(&new.policy)));
                if new.a2a != llm_ctx.a2a.load().cfg {
                    let rebuilt = crate::a2a::A2a::build(&new.a2a, Some(&llm_ctx.a2a.load()));
                    llm_ctx.a2a.store(Arc::new(rebuilt));
                }
                match crate::tls::Tls::build(&new, &llm_ctx.metrics, Some(&llm_ctx.tls.load())) {
                    Ok(t) => llm_ctx.tls.store(Arc::new(t)),
                    Err(e) => {
                        tracing::error!(error = %e, "the new TLS settings cannot be used; keeping the previous ones")
                    }
                }
                if new.mcp != llm_ctx.mcp.load().cfg {
                    let previous = llm_ctx.mcp.load_full();
                    let mcp = crate::mcp::Mcp::build(
                        &new.mcp,
                        &llm_ctx.upstream,
                        &llm_ctx.metrics,
                        Some(&previous),
                    );
                    llm_ctx.mcp.store(mcp);
                }
                if new.inference != last_inference {
                    last_inference = new.inference.clone();
                    let pools = crate::inference::Pools::build(&new.inference, &llm_ctx.pool_members);
                    llm_ctx.pools.store(Arc::new(pools));
                    // Members found while the pools were being built.
                    llm_ctx.pools.load().refresh(&llm_ctx.pool_members);
                    if let Some(c) = &llm_ctx.cluster {
                        c.watch_pools(&new.inference, pool_sink(&llm_ctx));
                    }
                    let mut s = scrapers.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = s.send(true);
                    *s = start_scrapers(&llm_ctx, stop_for_reload.clone());
                }
                if new.listeners != started_with.listeners
                    || new.admin != started_with.admin
                    || new.intercept.enabled != started_with.intercept.enabled
                    || new.intercept.pin_path != started_with.intercept.pin_path
                    || new.kubernetes != started_with.kubernetes
                {
                    tracing::warn!(
                        "listener addresses, intercept.enabled, intercept.pin_path and the kubernetes section take effect on restart only"
                    );
                }
                if let Some(i) = &interceptor
                    && let Err(e) = i.apply(&new)
                {
                    tracing::error!(error = %e, "applying the new intercept settings failed");
                }
                if let (Some(i), Some(c)) = (&interceptor, &llm_ctx.cluster) {
                    c.watch_services(&new.intercept.destinations, i.services(), resync_on_change(i));
                }
            }
        });
    }
    ready.store(true, Ordering::Release);
    tracing::info!("nodegate ready");

    wait_for_signal().await;
    tracing::info!("shutting down");
    ready.store(false, Ordering::Release);
    // Detach first: new connections go direct while we drain the ones we have.
    let uninstalling = match &ctx.cluster {
        Some(c) if cfg.intercept.keep_pinned => c.uninstalling().await,
        _ => false,
    };
    let keep = cfg.intercept.keep_pinned && !uninstalling;
    if let Some(i) = &interceptor {
        i.shutdown(keep);
    }
    // Programs kept attached (an upgrade) still redirect to the address: it stays with them.
    if let Some((addr, placed)) = &node_address
        && !keep
    {
        match crate::k8s::address::remove(*addr, placed) {
            Ok(()) => tracing::info!(%addr, interface = %placed.interface, "node-local address removed"),
            Err(e) => tracing::warn!(%addr, error = %e, "could not remove the node-local address"),
        }
    }
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    tracker.close();
    if tokio::time::timeout(cfg.timeouts.drain, tracker.wait()).await.is_err() {
        // Streams that can end cleanly (LLM, A2A) send their error event now; a moment for it
        // to be written, then whatever is left is closed.
        let _ = deadline_tx.send(true);
        if tokio::time::timeout(std::time::Duration::from_millis(500), tracker.wait()).await.is_err() {
            tracing::warn!(
                open = tracker.len(),
                "connections still open after the drain timeout; closing them"
            );
        }
    }
    let _ = admin_task.await;
    drop(ctx);
    if tokio::time::timeout(std::time::Duration::from_secs(5), audit_task).await.is_err() {
        tracing::warn!("audit writer did not finish flushing in 5s");
    }
    if let Some(t) = traces_task
        && tokio::time::timeout(cfg.traces.timeout, t).await.is_err()
    {
        tracing::warn!("trace exporter did not finish in traces.timeout");
    }
    tracing::info!("nodegate stopped");
    Ok(())
}

/// Keeps a verifier's keys fetched from `jwt.jwks_url`, while the verifier is in use.
fn refresh_jwks(v: &Arc<crate::identity::jwt::JwtVerifier>, ctx: &Arc<Ctx>) {
    if let Some(url) = v.config().jwks_url.clone() {
        tokio::spawn(crate::identity::jwt::refresh(Arc::downgrade(v), url, ctx.upstream.llm.clone()));
    }
}

/// A callback that rewrites the intercept table (a Service moved).
fn resync_on_change(i: &Arc<Interceptor>) -> Arc<dyn Fn() + Send + Sync> {
    let weak = Arc::downgrade(i);
    Arc::new(move || {
        if let Some(i) = weak.upgrade()
            && let Err(e) = i.resync_table()
        {
            tracing::error!(error = %e, "intercept table update after a Service change failed");
        }
    })
}

/// Where identity looks first for a cgroup id: the enrolled cgroups, and the kubelet's pods.
fn search_first(cfg: &config::Config) -> Vec<String> {
    let mut v = cfg.intercept.cgroups.clone();
    if cfg.kubernetes.enabled {
        v.push(cfg.kubernetes.kubepods.clone().unwrap_or_else(|| "/kubepods.slice".into()));
        v.push("/kubepods".into());
    }
    v
}

/// Where found pool members go: the table kept across reloads, and the live pool.
fn pool_sink(ctx: &Arc<Ctx>) -> crate::k8s::pools::Sink {
    let ctx = Arc::downgrade(ctx);
    Arc::new(move |pool: &str, members: Vec<crate::inference::Member>| {
        let Some(ctx) = ctx.upgrade() else { return };
        let mut found = ctx.pool_members.lock().unwrap_or_else(|e| e.into_inner());
        if members.is_empty() {
            found.remove(pool);
        } else {
            found.insert(pool.to_string(), members.clone());
        }
        drop(found);
        if let Some(p) = ctx.pools.load().by_name(pool) {
            p.set_found(members);
        }
    })
}

/// Starts one metrics scraper per pool; they end when the returned sender fires (a reload) or
/// when `stop` does (shutdown).
fn start_scrapers(ctx: &Arc<Ctx>, stop: watch::Receiver<bool>) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    for pool in ctx.pools.load().pools.iter() {
        let (pool, dialer, mut own, mut global) =
            (pool.clone(), ctx.upstream.dialer.clone(), rx.clone(), stop.clone());
        let (relay_tx, relay_rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = own.changed() => {}
                _ = global.changed() => {}
            }
            let _ = relay_tx.send(true);
        });
        tokio::spawn(crate::inference::scrape::run(pool, dialer, relay_rx));
    }
    tx
}

async fn heartbeat(i: Arc<Interceptor>, live: config::Shared, mut stop: watch::Receiver<bool>) {
    loop {
        let every = live.load().intercept.heartbeat.interval;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = i.beat() {
            tracing::error!(error = %e, "heartbeat write failed; the programs will fail open (or closed) soon");
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; running until killed");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
