//! Where the proxy may connect. Two checks, both enforced where they cannot be walked around:
//!
//! - [`OwnAddrs`]: nodegate's own listeners (admin, explicit, transparent) are never an upstream,
//!   by any name. The check runs in the dialer on the *resolved* address, so `localhost`, a node
//!   address, a host name that resolves here or an IPv4-mapped IPv6 literal all meet it.
//! - [`Egress`]: the operator's allow list for explicit callers (`egress.allow`), checked on
//!   the name or address the caller asked for before anything is resolved. Empty: anywhere.
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::{self, Target};

/// nodegate's own listening addresses.
#[derive(Debug, Default)]
pub struct OwnAddrs {
    addrs: Vec<SocketAddr>,
}

impl OwnAddrs {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        Self { addrs }
    }

    /// Whether a connection to `a` would reach one of our listeners.
    pub fn is_own(&self, a: SocketAddr) -> bool {
        let ip = a.ip().to_canonical();
        self.addrs.iter().any(|o| {
            o.port() == a.port()
                && (o.ip().to_canonical() == ip
                    || (o.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified() || is_local(ip))))
        })
    }
}

/// Whether `ip` is assigned to an interface of this host (in our network namespace).
fn is_local(ip: IpAddr) -> bool {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        // Cannot tell: treat as local, so the guard errs on the side of refusing.
        return true;
    }
    let mut found = false;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            let addr = match family {
                libc::AF_INET => {
                    // SAFETY: family AF_INET means the storage is a sockaddr_in.
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    Some(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()))
                }
                libc::AF_INET6 => {
                    // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
                    let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if addr == Some(ip) {
                found = true;
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

enum Rule {
    Net(IpNet, Vec<u16>),
    Host(String, Vec<u16>),
    /// `*.suffix`: any name below `suffix` (not `suffix` itself).
    Suffix(String, Vec<u16>),
}

/// The compiled `egress` section.
#[derive(Default)]
pub struct Egress {
    rules: Vec<Rule>,
}

fn port_ok(ports: &[u16], port: u16) -> bool {
    ports.is_empty() || ports.iter().any(|p| *p == 0 || *p == port)
}

impl Egress {
    pub fn new(cfg: &config::Egress) -> Self {
        let rules = cfg
            .allow
            .iter()
            .filter_map(|r| {
                let ports = r.ports.clone();
                if let Some(suffix) = r.address.strip_prefix("*.") {
                    return Some(Rule::Suffix(format!(".{}", suffix.to_ascii_lowercase()), ports));
                }
                match config::parse_target(&r.address).ok()? {
                    Target::Net(n) => Some(Rule::Net(n, ports)),
                    Target::Host(h) => Some(Rule::Host(h, ports)),
                }
            })
            .collect();
        Self { rules }
    }

    /// Whether an explicit caller may reach `host:port` (`host` as the caller wrote it).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        if self.rules.is_empty() {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok().map(|i| i.to_canonical());
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|r| match (r, ip) {
            (Rule::Net(n, ports), Some(ip)) => n.contains(&ip) && port_ok(ports, port),
            (Rule::Host(h, ports), None) => *h == name && port_ok(ports, port),
            (Rule::Suffix(s, ports), None) => name.ends_with(s.as_str()) && port_ok(ports, port),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_are_recognised_by_any_local_address() {
        let own = OwnAddrs::new(vec!["127.0.0.1:15000".parse().unwrap(), "0.0.0.0:15080".parse().unwrap()]);
        assert!(own.is_own("127.0.0.1:15000".parse().unwrap()));
        assert!(own.is_own("[::ffff:127.0.0.1]:15000".parse().unwrap()), "IPv4-mapped");
        assert!(!own.is_own("127.0.0.1:15001".parse().unwrap()));
        assert!(own.is_own("127.0.0.5:15080".parse().unwrap()), "unspecified bind: any loopback");
        assert!(own.is_own("0.0.0.0:15080".parse().unwrap()));
        assert!(!own.is_own("192.0.2.1:15080".parse().unwrap()), "not an address of this host");
    }

    #[test]
    fn egress_rules_match_addresses_names_and_ports() {
        let e = Egress::new(&config::Egress {
            allow: vec![
                config::EgressRule { address: "10.0.0.0/8".into(), ports: vec![443] },
                config::EgressRule { address: "api.example.com".into(), ports: vec![] },
                config::EgressRule { address: "*.svc.local".into(), ports: vec![0] },
            ],
        });
        assert!(e.allows("10.1.2.3", 443));
        assert!(!e.allows("10.1.2.3", 80));
        assert!(e.allows("API.example.com.", 8443));
        assert!(e.allows("a.b.svc.local", 1));
        assert!(!e.allows("svc.local", 1));
        assert!(!e.allows("127.0.0.1", 443));
        assert!(Egress::default().allows("anything", 1));
    }
}
