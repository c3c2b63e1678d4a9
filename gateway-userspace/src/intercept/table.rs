//! The intercept table: which destinations the programs redirect. Built from config (IPs and
//! CIDRs directly, host names through `dns`) and written into the LPM tries as a diff, so
//! entries that stay never blink out while the table is updated in place.
use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use gateway_common::{InterceptValue, PORT_BITS, TrafficClass, V4Key, V6Key};
use ipnet::IpNet;

use crate::config::{Class, Destination, Target, parse_target};

/// One table row: network, port (0 = any), and what it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub net: IpNet,
    pub port: u16,
}

pub type Desired = BTreeMap<Entry, InterceptValue>;

pub fn class_code(c: Class) -> u32 {
    (match c {
        Class::Auto => TrafficClass::Auto,
        Class::Http => TrafficClass::Http,
        Class::Llm => TrafficClass::Llm,
        Class::Mcp => TrafficClass::Mcp,
        Class::A2a => TrafficClass::A2a,
        Class::Tcp => TrafficClass::Tcp,
    }) as u32
}

/// Rows for the static (IP and CIDR) destinations; host names are returned separately with the
/// index of their rule, for the resolver.
pub fn static_entries(dests: &[Destination]) -> (Desired, Vec<(usize, String)>) {
    let mut out = Desired::new();
    let mut hosts = Vec::new();
    for (i, d) in dests.iter().enumerate() {
        match parse_target(&d.address) {
            Ok(Target::Net(net)) => add(&mut out, net, d, i),
            Ok(Target::Host(h)) => hosts.push((i, h)),
            Err(_) => {} // rejected by validation before we get here
        }
    }
    (out, hosts)
}

/// Adds rows for `net` on every port of destination `d` (rule index `i`).
pub fn add(out: &mut Desired, net: IpNet, d: &Destination, i: usize) {
    for &port in &d.ports {
        out.insert(Entry { net, port }, InterceptValue { class: class_code(d.class), rule: i as u32 });
    }
}

fn key_v4(net: &ipnet::Ipv4Net, port: u16) -> Key<V4Key> {
    Key::new(
        PORT_BITS + net.prefix_len() as u32,
        V4Key { port: port.to_be_bytes(), addr: net.network().octets() },
    )
}

fn key_v6(net: &ipnet::Ipv6Net, port: u16) -> Key<V6Key> {
    Key::new(
        PORT_BITS + net.prefix_len() as u32,
        V6Key { port: port.to_be_bytes(), addr: net.network().octets() },
    )
}

/// The two tries and what we last wrote into them.
pub struct Table {
    v4: LpmTrie<MapData, V4Key, InterceptValue>,
    v6: LpmTrie<MapData, V6Key, InterceptValue>,
    written: Desired,
}

impl Table {
    /// Wraps the maps. Entries left by an earlier proxy (pinned maps) are read back so the first
    /// sync removes what the new config no longer has.
    pub fn new(
        v4: LpmTrie<MapData, V4Key, InterceptValue>,
        v6: LpmTrie<MapData, V6Key, InterceptValue>,
    ) -> Self {
        let mut written = Desired::new();
        for (k, v) in v4.iter().flatten() {
            let prefix = k.prefix_len().saturating_sub(PORT_BITS) as u8;
            let d = k.data();
            if let Ok(net) = ipnet::Ipv4Net::new(d.addr.into(), prefix) {
                written.insert(Entry { net: IpNet::V4(net), port: u16::from_be_bytes(d.port) }, v);
            }
        }
        for (k, v) in v6.iter().flatten() {
            let prefix = k.prefix_len().saturating_sub(PORT_BITS) as u8;
            let d = k.data();
            if let Ok(net) = ipnet::Ipv6Net::new(d.addr.into(), prefix) {
                written.insert(Entry { net: IpNet::V6(net), port: u16::from_be_bytes(d.port) }, v);
            }
        }
        Self { v4, v6, written }
    }

    /// Makes the maps hold exactly `desired`: inserts and updates first, removals last.
    pub fn sync(&mut self, desired: &Desired) -> Result<(usize, usize), aya::maps::MapError> {
        let mut added = 0;
        for (e, v) in desired {
            if self.written.get(e) == Some(v) {
                continue;
            }
            match e.net {
                IpNet::V4(n) => self.v4.insert(&key_v4(&n, e.port), *v, 0)?,
                IpNet::V6(n) => self.v6.insert(&key_v6(&n, e.port), *v, 0)?,
            }
            added += 1;
        }
        let stale: Vec<Entry> = self.written.keys().filter(|e| !desired.contains_key(e)).copied().collect();
        for e in &stale {
            let r = match e.net {
                IpNet::V4(n) => self.v4.remove(&key_v4(&n, e.port)),
                IpNet::V6(n) => self.v6.remove(&key_v6(&n, e.port)),
            };
            if let Err(err) = r {
                tracing::warn!(entry = ?e, error = %err, "could not remove intercept entry");
            }
        }
        self.written = desired.clone();
        Ok((added, stale.len()))
    }

    pub fn len(&self) -> usize {
        self.written.len()
    }

    /// The rule a connection to `dst` matched (see [`lookup`]).
    pub fn rule_for(&self, dst: std::net::SocketAddr) -> Option<usize> {
        lookup(&self.written, dst)
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

/// Host-route rows for resolved addresses of a named destination.
pub fn host_entries(ips: &[IpAddr], d: &Destination, rule: usize) -> Desired {
    let mut out = Desired::new();
    for ip in ips {
        add(&mut out, IpNet::from(*ip), d, rule);
    }
    out
}

/// The rule a connection to `dst` matches, as the programs decide it: the longest prefix with
/// the exact port, else the longest prefix with port 0 (any).
pub fn lookup(rows: &Desired, dst: std::net::SocketAddr) -> Option<usize> {
    let ip = dst.ip();
    let best = |port: u16| {
        rows.iter()
            .filter(|(e, _)| e.port == port && e.net.contains(&ip))
            .max_by_key(|(e, _)| e.net.prefix_len())
            .map(|(_, v)| v.rule as usize)
    };
    best(dst.port()).or_else(|| best(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_prefers_the_exact_port_then_the_longest_prefix() {
        let mut rows = Desired::new();
        let mut put = |net: &str, port: u16, rule: u32| {
            rows.insert(Entry { net: net.parse().unwrap(), port }, InterceptValue { class: 0, rule });
        };
        put("10.0.0.0/8", 443, 0);
        put("10.1.0.0/16", 443, 1);
        put("10.1.2.3/32", 0, 2);
        let at = |s: &str| lookup(&rows, s.parse().unwrap());
        assert_eq!(at("10.1.2.3:443"), Some(1), "an exact-port row wins over a port-0 row");
        assert_eq!(at("10.1.2.3:80"), Some(2));
        assert_eq!(at("10.9.9.9:443"), Some(0));
        assert_eq!(at("11.0.0.1:443"), None);
    }
}
