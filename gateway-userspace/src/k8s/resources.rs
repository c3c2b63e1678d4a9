//! The gateway's own resources in the cluster (`nodegate.io/v1alpha1`, see
//! [`crate::config::resources`]): watched, merged into the file config one at a time with the
//! validation `nodegate check` runs, and answered with an `Accepted` status condition that says
//! what was made of each. A resource that does not validate changes nothing: the config live
//! before stays, and its condition names the field. Provider keys named by `credentials.secret`
//! (in the file or in a resource) are read from Kubernetes Secrets here, and read again every
//! `resync` so a rotated Secret takes effect.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::config::{
    Config, Problem, Secret, SecretKeyRef, Shared,
    resources::{GROUP, KINDS, Kind, VERSION},
    validate,
};

/// A resource: its kind's index in [`KINDS`] and its name.
type Key = (usize, String);

/// A Secret's data, or why it could not be read.
type SecretData = Result<BTreeMap<String, Vec<u8>>, String>;

/// Most resources of one kind merged; past it, the rest are refused (named in their status).
const MAX_PER_KIND: usize = 512;

#[derive(Debug, Clone)]
struct Object {
    generation: i64,
    spec: Option<Value>,
    /// The Accepted condition in its status now.
    accepted: Option<Value>,
}

/// What the agent made of one resource.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    accepted: bool,
    reason: &'static str,
    message: String,
}

pub struct Composer {
    client: Client,
    file: Mutex<Arc<Config>>,
    objects: Mutex<BTreeMap<Key, Object>>,
    listed: Mutex<Vec<bool>>,
    wake: Notify,
    live: Shared,
    changed: watch::Sender<Arc<Config>>,
    own_namespace: String,
    /// Per kind (in [`KINDS`] order): resources accepted and refused by the last merge.
    counts: Mutex<Vec<(usize, usize)>>,
    /// The last spec of each resource that merged, and its generation: a later change that
    /// does not validate leaves this one in force.
    last_good: Mutex<HashMap<Key, (i64, Option<Value>)>>,
}

fn resource(kind: &Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind.kind), kind.plural)
}

impl Composer {
    /// Starts one watch per kind and the loop that merges; the merged config goes to `live`
    /// and `changed`.
    pub fn start(
        client: Client,
        file: Arc<Config>,
        live: Shared,
        changed: watch::Sender<Arc<Config>>,
        own_namespace: String,
        resync: Duration,
    ) -> (Arc<Self>, Vec<tokio::task::JoinHandle<()>>) {
        let me = Arc::new(Self {
            client,
            file: Mutex::new(file),
            objects: Mutex::default(),
            listed: Mutex::new(vec![false; KINDS.len()]),
            wake: Notify::new(),
            live,
            changed,
            own_namespace,
            counts: Mutex::new(vec![(0, 0); KINDS.len()]),
            last_good: Mutex::default(),
        });
        let mut tasks: Vec<_> = (0..KINDS.len()).map(|i| tokio::spawn(me.clone().watch_kind(i))).collect();
        tasks.push(tokio::spawn(me.clone().run(resync)));
        (me, tasks)
    }

    /// Per kind: resources accepted and refused by the last merge.
    pub fn counts(&self) -> Vec<(&'static str, usize, usize)> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        KINDS.iter().zip(c.iter()).map(|(k, (a, r))| (k.kind, *a, *r)).collect()
    }

    /// A new file config (already valid on its own): merged again with the resources.
    pub fn set_file(&self, cfg: Arc<Config>) {
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
        self.wake.notify_one();
    }

    async fn watch_kind(self: Arc<Self>, i: usize) {
        let kind = &KINDS[i];
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource(kind));
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut listing: Option<BTreeMap<String, Object>> = None;
        let mut warned = false;
        let object = |o: &DynamicObject| Object {
            generation: o.metadata.generation.unwrap_or(0),
            spec: o.data.get("spec").cloned(),
            accepted: o
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
                .cloned(),
        };
        let name = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
        while let Some(ev) = stream.next().await {
            let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            match ev {
                Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    listing.get_or_insert_with(BTreeMap::new).insert(name(&o), object(&o));
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    objects.retain(|(k, _), _| *k != i);
                    for (n, o) in listing.take().unwrap_or_default() {
                        objects.insert((i, n), o);
                    }
                    self.listed.lock().unwrap_or_else(|e| e.into_inner())[i] = true;
                    warned = false;
                }
                Ok(watcher::Event::Apply(o)) => {
                    objects.insert((i, name(&o)), object(&o));
                }
                Ok(watcher::Event::Delete(o)) => {
                    objects.remove(&(i, name(&o)));
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(kind = kind.kind, error = %e, "watching nodegate resources failed (are the chart's CRDs installed?); keeping the last ones");
                        warned = true;
                    }
                    continue;
                }
            }
            drop(objects);
            self.wake.notify_one();
        }
    }

    async fn run(self: Arc<Self>, resync: Duration) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(resync) => {}
            }
            // Let a burst of events settle into one merge.
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.compose().await;
        }
    }

    async fn compose(&self) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let objects = self.objects.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut secrets = SecretCache::default();
        let mut cfg = (*file).clone();
        for (i, p) in cfg.llm.providers.iter_mut().enumerate() {
            if let Err(e) = self.resolve(p, &mut secrets).await {
                tracing::error!(provider = %p.name, "llm.providers[{i}].credentials.secret: {e}");
            }
        }
        let mut per_kind = vec![0usize; KINDS.len()];
        let mut verdicts = Vec::with_capacity(objects.len());
        let mut last_good = self.last_good.lock().unwrap_or_else(|e| e.into_inner()).clone();
        last_good.retain(|key, _| objects.contains_key(key));
        for ((k, name), obj) in &objects {
            let kind = &KINDS[*k];
            let key = (*k, name.clone());
            per_kind[*k] += 1;
            let verdict = if per_kind[*k] > MAX_PER_KIND {
                refused(
                    "TooMany",
                    format!("more than {MAX_PER_KIND} {} resources; this one is not merged", kind.kind),
                )
            } else {
                match self.merge(kind, name, obj.spec.as_ref(), &cfg, &mut secrets).await {
                    Ok(next) => {
                        cfg = next;
                        last_good.insert(key.clone(), (obj.generation, obj.spec.clone()));
                        Verdict {
                            accepted: true,
                            reason: "Accepted",
                            message: format!("merged into {}", kind.list),
                        }
                    }
                    Err(mut v) => {
                        // The change is refused; what this resource said before stays in force.
                        if let Some((generation, spec)) = last_good.get(&key).cloned()
                            && let Ok(next) = self.merge(kind, name, spec.as_ref(), &cfg, &mut secrets).await
                        {
                            cfg = next;
                            v.message.push_str(&format!(" (generation {generation} stays in force)"));
                        }
                        v
                    }
                }
            };
            verdicts.push((key, obj.clone(), verdict));
        }
        *self.last_good.lock().unwrap_or_else(|e| e.into_inner()) = last_good;
        let all_listed = self.listed.lock().unwrap_or_else(|e| e.into_inner()).iter().all(|l| *l);
        if **self.live.load() != cfg {
            let refused = verdicts.iter().filter(|(_, _, v)| !v.accepted).count();
            tracing::info!(
                resources = verdicts.len() - refused,
                refused,
                all_kinds_listed = all_listed,
                "configuration merged with the cluster's nodegate resources"
            );
            let cfg = Arc::new(cfg);
            self.live.store(cfg.clone());
            let _ = self.changed.send(cfg);
        }
        let mut counts = vec![(0, 0); KINDS.len()];
        for ((k, _), _, v) in &verdicts {
            if v.accepted {
                counts[*k].0 += 1;
            } else {
                counts[*k].1 += 1;
            }
        }
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        for ((k, name), obj, verdict) in verdicts {
            if let Some(status) = status_update(&obj, &verdict) {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource(&KINDS[k]));
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await
                {
                    tracing::warn!(kind = KINDS[k].kind, %name, error = %e, "writing the status failed");
                }
            }
        }
    }

    /// `cfg` with one more resource, or why not.
    async fn merge(
        &self,
        kind: &Kind,
        name: &str,
        spec: Option<&Value>,
        cfg: &Config,
        secrets: &mut SecretCache,
    ) -> Result<Config, Verdict> {
        let mut next = cfg.clone();
        let index = kind.len(&next);
        kind.merge(&mut next, name, spec).map_err(|p| refused("Invalid", p.to_string()))?;
        let problems = validate(&next);
        if !problems.is_empty() {
            let own = kind.own_problems(&problems, index);
            let shown: &[Problem] = if own.is_empty() { &problems } else { &own };
            let text: Vec<String> = shown.iter().map(ToString::to_string).collect();
            return Err(refused("Invalid", text.join("; ")));
        }
        if kind.list == "llm.providers"
            && let Some(p) = next.llm.providers.get_mut(index)
        {
            self.resolve(p, secrets)
                .await
                .map_err(|e| refused("SecretUnavailable", format!("spec.credentials.secret: {e}")))?;
        }
        Ok(next)
    }

    /// Reads the Secret key a provider names into its credentials.
    async fn resolve(
        &self,
        p: &mut crate::config::Provider,
        secrets: &mut SecretCache,
    ) -> Result<(), String> {
        let Some(c) = p.credentials.as_mut() else { return Ok(()) };
        let Some(r) = c.secret.clone() else { return Ok(()) };
        let ns = r.namespace.clone().unwrap_or_else(|| self.own_namespace.clone());
        let value = secrets.get(&self.client, &ns, &r).await?;
        c.resolved = Some(value);
        Ok(())
    }
}

fn refused(reason: &'static str, message: String) -> Verdict {
    Verdict { accepted: false, reason, message }
}

/// The status merge patch for `obj`, or None when its condition says this already.
fn status_update(obj: &Object, v: &Verdict) -> Option<Value> {
    let status = if v.accepted { "True" } else { "False" };
    if let Some(c) = &obj.accepted
        && c["status"] == status
        && c["reason"] == v.reason
        && c["message"] == v.message.as_str()
        && c["observedGeneration"] == obj.generation
    {
        return None;
    }
    let since = obj
        .accepted
        .as_ref()
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| {
            json!(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string())
        });
    Some(json!({"status": {
        "observedGeneration": obj.generation,
        "conditions": [{
            "type": "Accepted",
            "status": status,
            "reason": v.reason,
            "message": v.message,
            "observedGeneration": obj.generation,
            "lastTransitionTime": since,
        }]
    }}))
}

/// Secrets read during one merge, by namespace and name.
#[derive(Default)]
struct SecretCache(HashMap<(String, String), SecretData>);

impl SecretCache {
    async fn get(&mut self, client: &Client, ns: &str, r: &SecretKeyRef) -> Result<Secret, String> {
        let key = (ns.to_string(), r.name.clone());
        if !self.0.contains_key(&key) {
            let api: Api<KubeSecret> = Api::namespaced(client.clone(), ns);
            let got = match tokio::time::timeout(Duration::from_secs(5), api.get_opt(&r.name)).await {
                Ok(Ok(Some(s))) => {
                    Ok(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
                }
                Ok(Ok(None)) => Err(format!("Secret {ns}/{} not found", r.name)),
                Ok(Err(e)) => Err(format!("reading Secret {ns}/{}: {e}", r.name)),
                Err(_) => Err(format!("reading Secret {ns}/{}: timed out", r.name)),
            };
            self.0.insert(key.clone(), got);
        }
        let data = self.0.get(&key).cloned().unwrap_or_else(|| Err("unreachable".into()))?;
        let bytes =
            data.get(&r.key).ok_or_else(|| format!("Secret {ns}/{} has no key {:?}", r.name, r.key))?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("Secret {ns}/{} key {:?} is not UTF-8", r.name, r.key))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("Secret {ns}/{} key {:?} is empty", r.name, r.key));
        }
        Ok(Secret::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_written_only_when_it_changes() {
        let v = Verdict { accepted: false, reason: "Invalid", message: "spec.kind: unknown variant".into() };
        let mut obj = Object { generation: 2, spec: None, accepted: None };
        let patch = status_update(&obj, &v).expect("first verdict is written");
        let cond = patch["status"]["conditions"][0].clone();
        assert_eq!((cond["status"].as_str(), cond["observedGeneration"].as_i64()), (Some("False"), Some(2)));
        obj.accepted = Some(cond.clone());
        assert!(status_update(&obj, &v).is_none(), "same verdict, same generation: no write");
        obj.generation = 3;
        let again = status_update(&obj, &v).expect("a new generation is acknowledged");
        assert_eq!(
            again["status"]["conditions"][0]["lastTransitionTime"], cond["lastTransitionTime"],
            "status unchanged: time kept"
        );
    }
}
