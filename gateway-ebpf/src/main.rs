//! nodegate's eBPF programs, attached to the enrolled cgroups.
//!
//! - `ng_connect4` / `ng_connect6` (cgroup/connect4, cgroup/connect6): on connect() to a TCP
//!   destination found in the intercept table, remember {original destination, cgroup id} under
//!   the socket cookie and rewrite the destination to the proxy's transparent listener.
//! - `ng_sock_ops` (sock_ops, ACTIVE_ESTABLISHED): move that record from the cookie to the
//!   client's (local address, local port), which is the peer address the proxy sees on accept.
//!
//! - `ng_getpeername4` / `ng_getpeername6`: a redirected socket's getpeername() answers with the
//!   original destination, so the application never sees the proxy's address.
//! - UDP (connect on a datagram socket, and `ng_sendmsg4` / `ng_sendmsg6` for unconnected sends)
//!   to a port an intercept entry names exactly is refused while the proxy is alive (or under
//!   fail-closed), so QUIC/HTTP3 clients fall back to TCP, which is redirected. Entries for every
//!   port (port 0) leave UDP alone (DNS and the like).
//! - IPv6 to an intercepted destination with no IPv6 listener configured is refused under
//!   fail-closed, never sent direct.
//!
//! With `enrolled_only` set (Kubernetes), the programs sit at the kubepods cgroup and act only
//! for processes whose cgroup or an ancestor of it is in `NG_ENROLLED`: enrolling a pod is a map
//! update, and pods not enrolled are never touched.
//!
//! The proxy's own sockets carry `proxy_mark` and are never redirected. When the heartbeat the
//! proxy writes is stale, intercepted connections go direct (fail-open) or are refused
//! (fail-closed). These programs do not decide policy: they only move connections and record who
//! made them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, bpf_sock_addr},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_socket_cookie,
        bpf_ktime_get_ns,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::{SockAddrContext, SockOpsContext},
};
use aya_log_ebpf::debug;
use gateway_common::{
    AF_INET, AF_INET6, ENROLLED_MAX_DEPTH, ENROLLED_MAX_ENTRIES, INTERCEPT_MAX_ENTRIES, InterceptValue,
    ORIG_DST_MAX_ENTRIES, OrigDst, PEER_MAX_ENTRIES, PENDING_MAX_ENTRIES, PORT_BITS, ProxyConfig, SockKey,
    V4Key, V6Key, stats,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

#[map(name = "NG_INTERCEPT_V4")]
static INTERCEPT_V4: LpmTrie<V4Key, InterceptValue> = LpmTrie::pinned(INTERCEPT_MAX_ENTRIES, 0);
#[map(name = "NG_INTERCEPT_V6")]
static INTERCEPT_V6: LpmTrie<V6Key, InterceptValue> = LpmTrie::pinned(INTERCEPT_MAX_ENTRIES, 0);
#[map(name = "NG_CONFIG")]
static CONFIG: Array<ProxyConfig> = Array::pinned(1, 0);
#[map(name = "NG_HEARTBEAT")]
static HEARTBEAT: Array<u64> = Array::pinned(1, 0);
#[map(name = "NG_PENDING")]
static PENDING: LruHashMap<u64, OrigDst> = LruHashMap::pinned(PENDING_MAX_ENTRIES, 0);
#[map(name = "NG_ORIG_DST")]
static ORIG_DST: LruHashMap<SockKey, OrigDst> = LruHashMap::pinned(ORIG_DST_MAX_ENTRIES, 0);
#[map(name = "NG_PEER")]
static PEER: LruHashMap<u64, OrigDst> = LruHashMap::pinned(PEER_MAX_ENTRIES, 0);
#[map(name = "NG_ENROLLED")]
static ENROLLED: HashMap<u64, u32> = HashMap::pinned(ENROLLED_MAX_ENTRIES, 0);
#[map(name = "NG_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, the program is not preempted on this CPU while it runs.
        unsafe { *p += 1 };
    }
}

/// Decision shared by connect4 and connect6 once a table entry matched.
enum Verdict {
    Redirect(&'static ProxyConfig),
    Direct,
    Refuse,
}

#[inline(always)]
fn decide(sa: *mut bpf_sock_addr) -> Verdict {
    let Some(cfg) = CONFIG.get(0) else {
        return Verdict::Direct;
    };
    if cfg.enabled == 0 {
        return Verdict::Direct;
    }
    // SAFETY: `sk` is always set for sock_addr programs (the verifier types it PTR_TO_SOCKET).
    let mark = unsafe { (*(*sa).__bindgen_anon_1.sk).mark };
    if mark == cfg.proxy_mark {
        count(stats::OWN_TRAFFIC);
        return Verdict::Direct;
    }
    if cfg.enrolled_only != 0 && !enrolled() {
        return Verdict::Direct;
    }
    let beat = HEARTBEAT.get(0).copied().unwrap_or(0);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if beat == 0 || now.saturating_sub(beat) > cfg.heartbeat_timeout_ns {
        if cfg.fail_closed != 0 {
            count(stats::FAIL_CLOSED);
            return Verdict::Refuse;
        }
        count(stats::FAIL_OPEN);
        return Verdict::Direct;
    }
    Verdict::Redirect(cfg)
}

/// Whether the calling process's cgroup, or one of its ancestors, is in the enrolled set
/// (Kubernetes: the pod's cgroup is enrolled, its containers' cgroups sit below it).
#[inline(always)]
fn enrolled() -> bool {
    for level in 1..=ENROLLED_MAX_DEPTH {
        // SAFETY: helper without preconditions; 0 means the process is not that deep.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            return false;
        }
        // SAFETY: the value is not kept.
        if unsafe { ENROLLED.get(&id) }.is_some() {
            return true;
        }
    }
    false
}

#[inline(always)]
fn remember(ctx: &SockAddrContext, dst: OrigDst) -> bool {
    // SAFETY: helpers valid in cgroup/connect programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let dst = OrigDst { cgroup_id: unsafe { bpf_get_current_cgroup_id() }, ..dst };
    if PENDING.insert(&cookie, &dst, 0).is_err() {
        count(stats::MAP_ERRORS);
        return false;
    }
    // Best effort: without it getpeername() shows the proxy, the connection still works.
    let _ = PEER.insert(&cookie, &dst, 0);
    true
}

#[inline(always)]
fn lookup_v4(addr: [u8; 4], port: [u8; 2]) -> Option<InterceptValue> {
    let exact = Key::new(PORT_BITS + 32, V4Key { port, addr });
    if let Some(v) = INTERCEPT_V4.get(&exact) {
        return Some(*v);
    }
    let any_port = Key::new(PORT_BITS + 32, V4Key { port: [0, 0], addr });
    INTERCEPT_V4.get(&any_port).copied()
}

/// UDP to a port an entry names exactly: refused while the proxy is alive (the client falls
/// back to TCP, which is redirected) or when fail-closed; let through only when fail-open.
#[inline(always)]
fn udp_verdict(sa: *mut bpf_sock_addr, exact_hit: bool) -> i32 {
    if !exact_hit {
        return ALLOW;
    }
    match decide(sa) {
        Verdict::Direct => ALLOW,
        Verdict::Redirect(_) | Verdict::Refuse => {
            count(stats::UDP_REFUSED);
            DENY
        }
    }
}

#[inline(always)]
fn exact_v4(addr: [u8; 4], port: [u8; 2]) -> bool {
    INTERCEPT_V4.get(&Key::new(PORT_BITS + 32, V4Key { port, addr })).is_some()
}

#[inline(always)]
fn v6_bytes(ip6: [u32; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    for (i, w) in ip6.iter().enumerate() {
        let b = w.to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
    }
    addr
}

#[inline(always)]
fn exact_v6(ip6: [u32; 4], port: [u8; 2]) -> bool {
    let mapped = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0xffff_u32.to_be();
    if mapped {
        return exact_v4(ip6[3].to_ne_bytes(), port);
    }
    INTERCEPT_V6.get(&Key::new(PORT_BITS + 128, V6Key { port, addr: v6_bytes(ip6) })).is_some()
}

#[cgroup_sock_addr(sendmsg4)]
pub fn ng_sendmsg4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: ctx fields readable in sendmsg4.
    let (ty, ip, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    if ty != SOCK_DGRAM {
        return ALLOW;
    }
    udp_verdict(sa, exact_v4(ip.to_ne_bytes(), (port as u16).to_ne_bytes()))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn ng_sendmsg6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: ctx fields readable in sendmsg6.
    let (ty, ip6, port) = unsafe { ((*sa).type_, (*sa).user_ip6, (*sa).user_port) };
    if ty != SOCK_DGRAM {
        return ALLOW;
    }
    udp_verdict(sa, exact_v6(ip6, (port as u16).to_ne_bytes()))
}

#[cgroup_sock_addr(connect4)]
pub fn ng_connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: ctx fields readable in connect4.
    let (ty, ip, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    if ty == SOCK_DGRAM {
        return udp_verdict(sa, exact_v4(ip.to_ne_bytes(), (port as u16).to_ne_bytes()));
    }
    if ty != SOCK_STREAM {
        return ALLOW;
    }
    let port_be = (port as u16).to_ne_bytes();
    let Some(hit) = lookup_v4(ip.to_ne_bytes(), port_be) else {
        return ALLOW;
    };
    let cfg = match decide(sa) {
        Verdict::Redirect(cfg) => cfg,
        Verdict::Direct => return ALLOW,
        Verdict::Refuse => return DENY,
    };
    let dst =
        OrigDst { addr: [ip, 0, 0, 0], port: port as u16, family: AF_INET, class: hit.class, cgroup_id: 0 };
    if !remember(&ctx, dst) {
        return ALLOW;
    }
    // SAFETY: full 4-byte stores to writable ctx fields (see DESIGN: partial stores are rejected).
    unsafe {
        (*sa).user_ip4 = cfg.proxy_v4;
        (*sa).user_port = cfg.proxy_port;
    }
    count(stats::REDIRECTED);
    debug!(&ctx, "connect4 redirected port {} rule {}", u16::from_be(port as u16), hit.rule);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn ng_connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: ctx fields readable in connect6.
    let (ty, ip6, port) = unsafe { ((*sa).type_, (*sa).user_ip6, (*sa).user_port) };
    if ty == SOCK_DGRAM {
        return udp_verdict(sa, exact_v6(ip6, (port as u16).to_ne_bytes()));
    }
    if ty != SOCK_STREAM {
        return ALLOW;
    }
    let port_be = (port as u16).to_ne_bytes();
    // An IPv4-mapped address (::ffff:a.b.c.d) from a dual-stack socket is matched against the
    // IPv4 table and sent to the IPv4 listener, mapped.
    let mapped = ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0xffff_u32.to_be();
    let (hit, family) = if mapped {
        (lookup_v4(ip6[3].to_ne_bytes(), port_be), AF_INET)
    } else {
        let addr = v6_bytes(ip6);
        let exact = Key::new(PORT_BITS + 128, V6Key { port: port_be, addr });
        let hit = match INTERCEPT_V6.get(&exact) {
            Some(v) => Some(*v),
            None => INTERCEPT_V6.get(&Key::new(PORT_BITS + 128, V6Key { port: [0, 0], addr })).copied(),
        };
        (hit, AF_INET6)
    };
    let Some(hit) = hit else {
        return ALLOW;
    };
    let cfg = match decide(sa) {
        Verdict::Redirect(cfg) => cfg,
        Verdict::Direct => return ALLOW,
        Verdict::Refuse => return DENY,
    };
    let target = if family == AF_INET { [0, 0, 0xffff_u32.to_be(), cfg.proxy_v4] } else { cfg.proxy_v6 };
    if target == [0, 0, 0, 0] {
        // No IPv6 listener configured: under fail-closed the destination must not be reached
        // ungoverned, so refuse; under fail-open leave the connection alone.
        if cfg.fail_closed != 0 {
            count(stats::V6_REFUSED);
            return DENY;
        }
        return ALLOW;
    }
    let addr = if family == AF_INET { [ip6[3], 0, 0, 0] } else { ip6 };
    let dst = OrigDst { addr, port: port as u16, family, class: hit.class, cgroup_id: 0 };
    if !remember(&ctx, dst) {
        return ALLOW;
    }
    // SAFETY: full 4-byte stores to writable ctx fields.
    unsafe {
        (*sa).user_ip6[0] = target[0];
        (*sa).user_ip6[1] = target[1];
        (*sa).user_ip6[2] = target[2];
        (*sa).user_ip6[3] = target[3];
        (*sa).user_port = cfg.proxy_port;
    }
    count(stats::REDIRECTED);
    debug!(&ctx, "connect6 redirected port {} rule {}", u16::from_be(port as u16), hit.rule);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn ng_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper valid in getpeername programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is copied out at once.
    if let Some(dst) = unsafe { PEER.get(&cookie) }.copied()
        && dst.family == AF_INET
    {
        // SAFETY: full 4-byte stores to writable ctx fields.
        unsafe {
            (*ctx.sock_addr).user_ip4 = dst.addr[0];
            (*ctx.sock_addr).user_port = u32::from(dst.port);
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn ng_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: helper valid in getpeername programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: the value is copied out at once.
    if let Some(dst) = unsafe { PEER.get(&cookie) }.copied() {
        let ip = if dst.family == AF_INET { [0, 0, 0xffff_u32.to_be(), dst.addr[0]] } else { dst.addr };
        // SAFETY: full 4-byte stores to writable ctx fields.
        unsafe {
            (*ctx.sock_addr).user_ip6[0] = ip[0];
            (*ctx.sock_addr).user_ip6[1] = ip[1];
            (*ctx.sock_addr).user_ip6[2] = ip[2];
            (*ctx.sock_addr).user_ip6[3] = ip[3];
            (*ctx.sock_addr).user_port = u32::from(dst.port);
        }
    }
    ALLOW
}

#[sock_ops]
pub fn ng_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 0;
    }
    // SAFETY: bpf_get_socket_cookie is valid for sock_ops.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: the value is copied out before the entry is removed below.
    let Some(dst) = (unsafe { PENDING.get(&cookie) }).copied() else {
        return 0;
    };
    let port = (ctx.local_port() as u16).to_be();
    let key = if ctx.family() == AF_INET as u32 {
        SockKey { addr: [ctx.local_ip4(), 0, 0, 0], port, family: AF_INET }
    } else {
        let ip6 = ctx.local_ip6();
        if ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0xffff_u32.to_be() {
            SockKey { addr: [ip6[3], 0, 0, 0], port, family: AF_INET }
        } else {
            SockKey { addr: ip6, port, family: AF_INET6 }
        }
    };
    if ORIG_DST.insert(&key, &dst, 0).is_err() {
        count(stats::MAP_ERRORS);
    } else {
        count(stats::REKEYED);
    }
    let _ = PENDING.remove(&cookie);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
