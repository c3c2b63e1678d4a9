//! What `nodegate pods` and the admin `/pods` endpoint show: each pod on this node, what
//! nodegate names it as, and whether (and why) it is intercepted.
use serde::Serialize;

use super::{Cluster, enroll::State, store::HealthReport};

#[derive(Debug, Serialize)]
pub struct Report {
    pub node: String,
    pub kubepods: Option<String>,
    pub api: Api,
    /// From a watch event's arrival to the enrolled map write it caused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_latency: Option<super::enroll::Latency>,
    pub pods: Vec<PodLine>,
}

#[derive(Debug, Serialize)]
pub struct Api {
    pub pods: HealthReport,
    pub namespaces: HealthReport,
}

#[derive(Debug, Serialize)]
pub struct PodLine {
    /// The workload name audit records, metrics and `workloads` selectors use.
    pub identity: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    pub containers: Vec<String>,
    /// `enrolled`, `pending` or `not_enrolled`, with the reason; absent when enrollment is off
    /// (interception disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<State>,
}

pub fn report(c: &Cluster) -> Report {
    let states = c.enroller.as_ref().map(|e| e.states()).unwrap_or_default();
    let mut pods: Vec<PodLine> = c
        .store
        .pods()
        .iter()
        .map(|p| PodLine {
            identity: p.workload(),
            namespace: p.namespace.to_string(),
            name: p.name.to_string(),
            uid: p.uid.to_string(),
            service_account: p.service_account.to_string(),
            containers: p.containers.iter().map(|c| c.name.to_string()).collect(),
            enrollment: c.enroller.as_ref().map(|_| {
                states.get(&p.uid).cloned().unwrap_or(State::Pending { reason: "not reconciled yet".into() })
            }),
        })
        .collect();
    pods.sort_by(|a, b| a.identity.cmp(&b.identity));
    Report {
        node: c.node.clone(),
        kubepods: c.kubepods.clone(),
        api: Api { pods: c.store.pods_health.report(), namespaces: c.store.namespaces_health.report() },
        enrollment_latency: c.enroller.as_ref().map(|e| e.latency()),
        pods,
    }
}

/// GETs `/pods` from a running agent's admin listener (plain HTTP/1.0 on loopback).
pub fn fetch(admin: std::net::SocketAddr, token: Option<&str>) -> Result<String, String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&admin, timeout)
        .map_err(|e| format!("cannot reach the agent's admin listener at {admin}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET /pods HTTP/1.0\r\nHost: {admin}\r\n{auth}\r\n").map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| format!("reading the answer from {admin}: {e}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("malformed answer from the admin listener")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("{admin}/pods answered {status}: {}", body.trim()));
    }
    Ok(body.to_string())
}

/// The `/pods` JSON as a table.
pub fn table(body: &str) -> Result<String, String> {
    use std::fmt::Write;
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("not the /pods JSON: {e}"))?;
    let mut out = String::new();
    let api = |r: &str| {
        let h = &v["api"][r];
        if h["connected"] == true {
            "connected".to_string()
        } else {
            format!("unreachable ({})", h["last_error"].as_str().unwrap_or("-"))
        }
    };
    let _ = writeln!(
        out,
        "node {}  kubepods {}  api: pods {}, namespaces {}",
        v["node"].as_str().unwrap_or("?"),
        v["kubepods"].as_str().unwrap_or("-"),
        api("pods"),
        api("namespaces")
    );
    let _ = writeln!(out, "{:<40} {:<20} {:<13} DETAIL", "IDENTITY", "SERVICE ACCOUNT", "INTERCEPTED");
    for p in v["pods"].as_array().into_iter().flatten() {
        let e = &p["enrollment"];
        let (state, detail) = match e["state"].as_str() {
            Some("enrolled") => (
                "yes",
                format!("{} ({})", e["cgroup"].as_str().unwrap_or("?"), e["by"].as_str().unwrap_or("?")),
            ),
            Some("pending") => ("pending", e["reason"].as_str().unwrap_or("").to_string()),
            Some("not_enrolled") => ("no", e["reason"].as_str().unwrap_or("").to_string()),
            _ => ("-", "interception off".to_string()),
        };
        let _ = writeln!(
            out,
            "{:<40} {:<20} {:<13} {detail}",
            p["identity"].as_str().unwrap_or("?"),
            p["service_account"].as_str().unwrap_or("?"),
            state
        );
    }
    Ok(out)
}
