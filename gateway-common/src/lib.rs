//! Types shared by nodegate's eBPF programs and its userspace proxy.
//!
//! Everything here is `#[repr(C)]`, has no padding the kernel could fill with garbage, and is
//! `no_std`. The `aya::Pod` impls that let userspace read and write these through maps sit behind
//! the `user` feature, so the eBPF crate never sees aya. Byte orders are spelled out on each field:
//! addresses and ports are kept in network order exactly as the kernel hands them to the programs.
#![no_std]

/// Map names, as the loader finds them in the object and as they are pinned under the pin path.
pub mod maps {
    pub const INTERCEPT_V4: &str = "NG_INTERCEPT_V4";
    pub const INTERCEPT_V6: &str = "NG_INTERCEPT_V6";
    pub const CONFIG: &str = "NG_CONFIG";
    pub const HEARTBEAT: &str = "NG_HEARTBEAT";
    pub const PENDING: &str = "NG_PENDING";
    pub const ORIG_DST: &str = "NG_ORIG_DST";
    pub const STATS: &str = "NG_STATS";
    pub const PEER: &str = "NG_PEER";
    pub const ENROLLED: &str = "NG_ENROLLED";
    /// Every map nodegate pins; used to clean up a pin directory.
    pub const ALL: [&str; 9] =
        [INTERCEPT_V4, INTERCEPT_V6, CONFIG, HEARTBEAT, PENDING, ORIG_DST, STATS, PEER, ENROLLED];
}

/// Program names (function names in the eBPF object).
pub mod programs {
    pub const CONNECT4: &str = "ng_connect4";
    pub const CONNECT6: &str = "ng_connect6";
    pub const SOCK_OPS: &str = "ng_sock_ops";
    pub const GETPEERNAME4: &str = "ng_getpeername4";
    pub const GETPEERNAME6: &str = "ng_getpeername6";
    pub const SENDMSG4: &str = "ng_sendmsg4";
    pub const SENDMSG6: &str = "ng_sendmsg6";
    /// Every cgroup sock_addr program, in the order they are loaded and attached.
    pub const SOCK_ADDR: [&str; 6] = [CONNECT4, CONNECT6, GETPEERNAME4, GETPEERNAME6, SENDMSG4, SENDMSG6];
}

/// Capacity of the intercept tables (entries per address family).
pub const INTERCEPT_MAX_ENTRIES: u32 = 16_384;
/// Capacity of the cookie -> original destination map (connections between connect() and the
/// end of the handshake).
pub const PENDING_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the client address -> original destination map (connections the proxy has not
/// accepted yet). LRU, so a proxy that never accepts cannot wedge it.
pub const ORIG_DST_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the cookie -> original destination map read by getpeername (redirected sockets
/// alive now; LRU, so closed ones age out).
pub const PEER_MAX_ENTRIES: u32 = 65_536;
/// Capacity of the enrolled-cgroup set (pods on one node that are intercepted).
pub const ENROLLED_MAX_ENTRIES: u32 = 16_384;
/// Deepest cgroup level the programs look at for an enrolled ancestor (the kubelet's pod
/// cgroups sit at level 2 or 3 below the root; a nested hierarchy adds a few).
pub const ENROLLED_MAX_DEPTH: u32 = 16;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Prefix length contributed by the port, which always matches exactly: the LPM key is the port
/// followed by the address, so `prefix_len = PORT_BITS + cidr_len`.
pub const PORT_BITS: u32 = 16;

/// LPM trie key data for IPv4: port then address, both network order. Port 0 means any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V4Key {
    pub port: [u8; 2],
    pub addr: [u8; 4],
}

/// LPM trie key data for IPv6: port then address, both network order. Port 0 means any port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V6Key {
    pub port: [u8; 2],
    pub addr: [u8; 16],
}

/// What kind of traffic an intercepted destination carries. The proxy uses it as a hint; the
/// request itself decides in the end.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficClass {
    Auto = 0,
    Http = 1,
    Llm = 2,
    Mcp = 3,
    A2a = 4,
    Tcp = 5,
}

impl TrafficClass {
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => Self::Http,
            2 => Self::Llm,
            3 => Self::Mcp,
            4 => Self::A2a,
            5 => Self::Tcp,
            _ => Self::Auto,
        }
    }
}

/// Value of an intercept table entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterceptValue {
    /// A [`TrafficClass`] as u32.
    pub class: u32,
    /// Index of the destination in the config that produced this entry (for status output).
    pub rule: u32,
}

/// Global settings the programs read on every connect. Index 0 of an array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// 1 when redirecting is on at all.
    pub enabled: u32,
    /// 1: refuse intercepted connections while the heartbeat is stale; 0: let them go direct.
    pub fail_closed: u32,
    /// Where intercepted IPv4 connections are sent (network order).
    pub proxy_v4: u32,
    /// Port of the transparent listener, network order in the low 16 bits (as `user_port`).
    pub proxy_port: u32,
    /// Where intercepted IPv6 connections are sent (network order); all zero: IPv6 not redirected.
    pub proxy_v6: [u32; 4],
    /// SO_MARK the proxy sets on its own upstream sockets; they are never redirected.
    pub proxy_mark: u32,
    /// 1: only processes in a cgroup listed in the enrolled map, or below one, are
    /// intercepted (Kubernetes: the programs sit at the kubepods level, pods are enrolled by
    /// map update); 0: everything below the cgroups the programs are attached to.
    pub enrolled_only: u32,
    /// Heartbeat older than this (CLOCK_MONOTONIC nanoseconds) counts as a dead proxy.
    pub heartbeat_timeout_ns: u64,
}

/// The destination a client meant to reach, and who it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// Address, network order; IPv4 in `addr[0]`.
    pub addr: [u32; 4],
    /// Port, network order.
    pub port: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// [`TrafficClass`] of the matching intercept entry.
    pub class: u32,
    /// Cgroup (v2) id of the process that called connect(): the inode of its cgroup directory.
    pub cgroup_id: u64,
}

/// The client's side of an established connection, as the proxy sees it as its peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// Address, network order; IPv4 in `addr[0]`.
    pub addr: [u32; 4],
    /// Port, network order.
    pub port: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
}

/// Counters in the per-CPU stats array, by index.
pub mod stats {
    /// Connections rewritten to the proxy.
    pub const REDIRECTED: u32 = 0;
    /// Intercepted destinations let through directly because the heartbeat was stale (fail-open).
    pub const FAIL_OPEN: u32 = 1;
    /// Intercepted destinations refused because the heartbeat was stale (fail-closed).
    pub const FAIL_CLOSED: u32 = 2;
    /// Connections of the proxy itself (marked) to intercepted destinations, left alone.
    pub const OWN_TRAFFIC: u32 = 3;
    /// Redirected connections whose record was re-keyed by client address at handshake.
    pub const REKEYED: u32 = 4;
    /// Failures to store a record (map full or error): the connection went direct.
    pub const MAP_ERRORS: u32 = 5;
    /// IPv6 connections to intercepted destinations refused under fail-closed because no IPv6
    /// listener (`redirect_to_v6`) is configured.
    pub const V6_REFUSED: u32 = 6;
    /// UDP to an intercepted destination's port refused (QUIC/HTTP3 falls back to TCP, which is
    /// redirected).
    pub const UDP_REFUSED: u32 = 7;
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected",
        "fail_open",
        "fail_closed",
        "own_traffic",
        "rekeyed",
        "map_errors",
        "v6_refused",
        "udp_refused",
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers and integer arrays, and
    // laid out without implicit padding, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::V4Key {}
    unsafe impl aya::Pod for super::V6Key {}
    unsafe impl aya::Pod for super::InterceptValue {}
    unsafe impl aya::Pod for super::ProxyConfig {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::SockKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<V4Key>(), 6);
        assert_eq!(size_of::<V6Key>(), 18);
        assert_eq!(size_of::<InterceptValue>(), 8);
        assert_eq!(size_of::<ProxyConfig>(), 4 * 4 + 16 + 4 + 4 + 8);
        assert_eq!(size_of::<OrigDst>(), 16 + 2 + 2 + 4 + 8);
        assert_eq!(size_of::<SockKey>(), 16 + 2 + 2);
    }
}
