//! `nodegate intercept status`: what the kernel holds right now, read from the pinned maps and
//! links, so it works whether or not a proxy is running (which is when it matters most).
use std::{net::SocketAddr, path::Path};

use aya::maps::{Array, Map, MapData, PerCpuArray, lpm_trie::LpmTrie};
use gateway_common::{InterceptValue, PORT_BITS, ProxyConfig, TrafficClass, V4Key, V6Key, maps, stats};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    /// Pinned links: `<program>_cg<cgroup id>_p<pid of the proxy that attached it>` (bpffs names
    /// cannot contain dots).
    pub links: Vec<String>,
    pub enabled: bool,
    pub fail_closed: bool,
    pub redirect_to: String,
    pub heartbeat_age_ms: Option<u64>,
    pub heartbeat_timeout_ms: u64,
    pub heartbeat_fresh: bool,
    pub entries: Vec<TableRow>,
    pub counters: Vec<(String, u64)>,
}

#[derive(Debug, Serialize)]
pub struct TableRow {
    pub network: String,
    pub port: String,
    pub class: String,
    pub rule: u32,
}

fn open(pin_dir: &Path, name: &str) -> Result<MapData, String> {
    MapData::from_pin(pin_dir.join(name)).map_err(|e| format!("{}: {e}", pin_dir.join(name).display()))
}

pub fn read(pin_dir: &Path) -> Result<Status, String> {
    if !pin_dir.exists() {
        return Err(format!(
            "{} does not exist: interception was never started here, or was cleaned up",
            pin_dir.display()
        ));
    }
    let mut links: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    links.sort();

    let cfg: ProxyConfig = Array::<_, ProxyConfig>::try_from(Map::Array(open(pin_dir, maps::CONFIG)?))
        .and_then(|a| a.get(&0, 0))
        .map_err(|e| e.to_string())?;
    let beat: u64 = Array::<_, u64>::try_from(Map::Array(open(pin_dir, maps::HEARTBEAT)?))
        .and_then(|a| a.get(&0, 0))
        .map_err(|e| e.to_string())?;
    let age_ns = (beat > 0).then(|| super::monotonic_ns().saturating_sub(beat));

    let mut entries = Vec::new();
    let v4 = LpmTrie::<_, V4Key, InterceptValue>::try_from(Map::LpmTrie(open(pin_dir, maps::INTERCEPT_V4)?))
        .map_err(|e| e.to_string())?;
    for (k, v) in v4.iter().flatten() {
        let d = k.data();
        let net =
            format!("{}/{}", std::net::Ipv4Addr::from(d.addr), k.prefix_len().saturating_sub(PORT_BITS));
        entries.push(row(net, u16::from_be_bytes(d.port), v));
    }
    let v6 = LpmTrie::<_, V6Key, InterceptValue>::try_from(Map::LpmTrie(open(pin_dir, maps::INTERCEPT_V6)?))
        .map_err(|e| e.to_string())?;
    for (k, v) in v6.iter().flatten() {
        let d = k.data();
        let net =
            format!("{}/{}", std::net::Ipv6Addr::from(d.addr), k.prefix_len().saturating_sub(PORT_BITS));
        entries.push(row(net, u16::from_be_bytes(d.port), v));
    }

    let counters = read_counters(pin_dir)?;
    let redirect = SocketAddr::from((
        std::net::Ipv4Addr::from(cfg.proxy_v4.to_ne_bytes()),
        u16::from_be(cfg.proxy_port as u16),
    ));
    Ok(Status {
        pin_dir: pin_dir.display().to_string(),
        links,
        enabled: cfg.enabled != 0,
        fail_closed: cfg.fail_closed != 0,
        redirect_to: redirect.to_string(),
        heartbeat_age_ms: age_ns.map(|n| n / 1_000_000),
        heartbeat_timeout_ms: cfg.heartbeat_timeout_ns / 1_000_000,
        heartbeat_fresh: age_ns.is_some_and(|a| a <= cfg.heartbeat_timeout_ns),
        entries,
        counters,
    })
}

/// The programs' counters summed over CPUs, by name.
pub fn read_counters(pin_dir: &Path) -> Result<Vec<(String, u64)>, String> {
    let arr = PerCpuArray::<_, u64>::try_from(Map::PerCpuArray(open(pin_dir, maps::STATS)?))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, name) in stats::NAMES.iter().enumerate() {
        let total = arr.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
        out.push((name.to_string(), total));
    }
    Ok(out)
}

/// Heartbeat age in seconds, as the programs see it.
pub fn heartbeat_age(pin_dir: &Path) -> Option<f64> {
    let a = Array::<_, u64>::try_from(Map::Array(open(pin_dir, maps::HEARTBEAT).ok()?)).ok()?;
    let beat = a.get(&0, 0).ok()?;
    Some(super::monotonic_ns().saturating_sub(beat) as f64 / 1e9)
}

fn row(network: String, port: u16, v: InterceptValue) -> TableRow {
    TableRow {
        network,
        port: if port == 0 { "*".into() } else { port.to_string() },
        class: format!("{:?}", TrafficClass::from_u32(v.class)).to_lowercase(),
        rule: v.rule,
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pin directory:   {}", self.pin_dir)?;
        writeln!(
            f,
            "redirecting:     {} (to {}, fail-{})",
            if self.enabled { "on" } else { "off" },
            self.redirect_to,
            if self.fail_closed { "closed" } else { "open" }
        )?;
        match self.heartbeat_age_ms {
            Some(age) => writeln!(
                f,
                "heartbeat:       {age} ms ago, timeout {} ms: {}",
                self.heartbeat_timeout_ms,
                if self.heartbeat_fresh { "fresh" } else { "STALE (proxy gone)" }
            )?,
            None => writeln!(f, "heartbeat:       never written")?,
        }
        writeln!(f, "attached links:  {}", self.links.len())?;
        for l in &self.links {
            writeln!(f, "  {l}")?;
        }
        writeln!(f, "intercept table: {} entries", self.entries.len())?;
        for e in &self.entries {
            writeln!(f, "  {:<24} port {:<6} class {:<5} rule {}", e.network, e.port, e.class, e.rule)?;
        }
        writeln!(f, "counters:")?;
        for (name, v) in &self.counters {
            writeln!(f, "  {name:<12} {v}")?;
        }
        Ok(())
    }
}
