//! The two watches: this node's pods (field selector `spec.nodeName`) and every namespace's
//! labels. kube-runtime's watcher lists, then watches from the list's resourceVersion, asks for
//! bookmarks, relists when the server answers 410 Gone, and backs off when the server is away;
//! this module turns its events into the compact [`Store`] and records health.
use std::{collections::BTreeMap, sync::Arc};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod as ApiPod};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};

use super::{pod::Pod, store::Store};

/// Watches pods scheduled on `node` until the task is aborted.
pub async fn pods(client: Client, node: String, store: Arc<Store>) {
    let api: Api<ApiPod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = watcher(api, cfg).default_backoff();
    futures_util::pin_mut!(stream);
    let mut relist: Option<Vec<Pod>> = None;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => {
                relist = Some(Vec::new());
                store.pods_health.ok(false);
            }
            Ok(watcher::Event::InitApply(p)) => {
                if let (Some(buf), Some(p)) = (relist.as_mut(), Pod::from_api(&p)) {
                    buf.push(p);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let all = relist.take().unwrap_or_default();
                tracing::info!(pods = all.len(), %node, "pods on this node listed");
                store.replace_pods(all);
                store.pods_health.ok(true);
            }
            Ok(watcher::Event::Apply(p)) => {
                if let Some(p) = Pod::from_api(&p) {
                    store.upsert_pod(p);
                }
                store.pods_health.ok(false);
            }
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    store.remove_pod(uid);
                }
                store.pods_health.ok(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; serving the last good view");
                store.pods_health.failed(e.to_string());
            }
        }
    }
}

/// kube-runtime's watcher resumes a broken watch from its last resourceVersion and yields
/// nothing until an object changes, so a quiet watch that came back would look failed forever.
/// While a watch is failing, this lists one object of the same resource every `every`: success
/// means the API server answers that call again (the watch's own next error flips it back).
pub async fn recover(client: Client, node: String, store: Arc<Store>, every: std::time::Duration) {
    let pods: Api<ApiPod> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if !store.pods_health.report().connected && store.pods_health.report().synced {
            let lp = kube::api::ListParams::default().fields(&format!("spec.nodeName={node}")).limit(1);
            if pods.list(&lp).await.is_ok() {
                store.pods_health.ok(false);
            }
        }
        if !store.namespaces_health.report().connected
            && store.namespaces_health.report().synced
            && namespaces.list(&kube::api::ListParams::default().limit(1)).await.is_ok()
        {
            store.namespaces_health.ok(false);
        }
    }
}

/// Watches every namespace's labels (for enrollment by namespace label).
pub async fn namespaces(client: Client, store: Arc<Store>) {
    let api: Api<Namespace> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    let mut relist: Option<Vec<(String, BTreeMap<String, String>)>> = None;
    let entry =
        |n: &Namespace| Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default()));
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => relist = Some(Vec::new()),
            Ok(watcher::Event::InitApply(n)) => {
                if let (Some(buf), Some(e)) = (relist.as_mut(), entry(&n)) {
                    buf.push(e);
                }
            }
            Ok(watcher::Event::InitDone) => {
                store.replace_namespaces(relist.take().unwrap_or_default());
                store.namespaces_health.ok(true);
            }
            Ok(watcher::Event::Apply(n)) => {
                if let Some((name, labels)) = entry(&n) {
                    store.upsert_namespace(name, labels);
                }
                store.namespaces_health.ok(false);
            }
            Ok(watcher::Event::Delete(n)) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    store.remove_namespace(name);
                }
                store.namespaces_health.ok(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "namespace watch failed; serving the last good view");
                store.namespaces_health.failed(e.to_string());
            }
        }
    }
}
