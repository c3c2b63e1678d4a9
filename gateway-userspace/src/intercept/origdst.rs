//! Where an accepted connection was going: the key the sock_ops program stored the record under
//! (the client's address, which is our peer), and the iptables fallback (SO_ORIGINAL_DST from
//! conntrack) for nodes without cgroup eBPF.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
};

use gateway_common::{AF_INET, AF_INET6, OrigDst, SockKey};

/// The map key for a peer address, as the sock_ops program wrote it.
pub fn key_for_peer(peer: SocketAddr) -> SockKey {
    let port = peer.port().to_be();
    match canonical(peer.ip()) {
        IpAddr::V4(v4) => SockKey { addr: [u32::from_ne_bytes(v4.octets()), 0, 0, 0], port, family: AF_INET },
        IpAddr::V6(v6) => SockKey { addr: words(&v6.octets()), port, family: AF_INET6 },
    }
}

fn words(b: &[u8; 16]) -> [u32; 4] {
    [0, 4, 8, 12].map(|i| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The socket address in an eBPF record.
pub fn socket_addr(d: &OrigDst) -> SocketAddr {
    let port = u16::from_be(d.port);
    if d.family == AF_INET6 {
        let mut b = [0u8; 16];
        for (i, w) in d.addr.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        SocketAddr::from((Ipv6Addr::from(b), port))
    } else {
        SocketAddr::from((Ipv4Addr::from(d.addr[0].to_ne_bytes()), port))
    }
}

const SO_ORIGINAL_DST: libc::c_int = 80;
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The pre-NAT destination of a connection redirected by iptables (conntrack). `None` when the
/// connection was not NATed (the answer is then our own address).
pub fn so_original_dst(sock: &impl AsRawFd, local: SocketAddr) -> Option<SocketAddr> {
    let fd = sock.as_raw_fd();
    let found = if local.is_ipv4() || matches!(local.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) {
        // SAFETY: sockaddr_in is plain data; len matches its size.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ))
        })
    } else {
        // SAFETY: as above for sockaddr_in6.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                IP6T_SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        (rc == 0).then(|| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                0,
                0,
            ))
        })
    };
    found.filter(|dst| *dst != local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys_match_what_sock_ops_writes() {
        // sock_ops stores local_ip4 as the kernel has it (network order in memory) and the
        // port converted to network order.
        let k = key_for_peer("169.254.77.2:40000".parse().unwrap());
        assert_eq!(k.family, AF_INET);
        assert_eq!(k.addr[0].to_ne_bytes(), [169, 254, 77, 2]);
        assert_eq!(k.port, 40000u16.to_be());
        let mapped = key_for_peer("[::ffff:169.254.77.2]:40000".parse().unwrap());
        assert_eq!(mapped, k, "v4-mapped peers use the IPv4 key");
    }

    #[test]
    fn records_round_trip_to_socket_addrs() {
        let d = OrigDst {
            addr: [u32::from_ne_bytes([10, 1, 2, 3]), 0, 0, 0],
            port: 8080u16.to_be(),
            family: AF_INET,
            class: 0,
            cgroup_id: 7,
        };
        assert_eq!(socket_addr(&d), "10.1.2.3:8080".parse::<SocketAddr>().unwrap());
        let v6: Ipv6Addr = "fd00::1".parse().unwrap();
        let d6 = OrigDst {
            addr: words(&v6.octets()),
            port: 443u16.to_be(),
            family: AF_INET6,
            class: 0,
            cgroup_id: 7,
        };
        assert_eq!(socket_addr(&d6), "[fd00::1]:443".parse::<SocketAddr>().unwrap());
    }
}
