//! The cgroup of the local socket at the other end of one of our TCP connections, asked of the
//! kernel directly: one NETLINK_SOCK_DIAG exact lookup by 4-tuple, whose answer carries
//! INET_DIAG_CGROUP_ID (Linux 5.8+). Tens of microseconds, and it names the socket's creator
//! even after that process has exited; the /proc scan in `peer` is the fallback.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_CGROUP_ID: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// struct inet_diag_msg.
const DIAG_MSG_LEN: usize = 72;

/// struct inet_diag_sockid: ports and addresses in network order.
fn sockid(src: SocketAddr, dst: SocketAddr) -> [u8; 48] {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    let put = |buf: &mut [u8], ip: IpAddr| match ip {
        IpAddr::V4(v4) => buf[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => buf.copy_from_slice(&v6.octets()),
    };
    put(&mut id[4..20], src.ip());
    put(&mut id[20..36], dst.ip());
    // idiag_if = 0; idiag_cookie = INET_DIAG_NOCOOKIE (all ones).
    id[40..48].copy_from_slice(&[0xff; 8]);
    id
}

/// The request: nlmsghdr + inet_diag_req_v2 for the TCP socket `src` -> `dst`.
fn request(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
    let mut body = vec![family, libc::IPPROTO_TCP as u8, 0, 0];
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    body.extend_from_slice(&sockid(src, dst));
    let len = (NLMSG_HDRLEN + body.len()) as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    msg.extend_from_slice(&body);
    msg
}

/// The cgroup id in one answer, if the answer is a socket record that carries one.
fn parse(buf: &[u8]) -> Option<u64> {
    let u16_at = |i: usize| buf.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let msg_len = buf.get(0..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    if u16_at(4)? == NLMSG_ERROR || msg_len > buf.len() {
        return None;
    }
    let mut at = NLMSG_HDRLEN + DIAG_MSG_LEN;
    while at + 4 <= msg_len {
        let (len, kind) = (u16_at(at)? as usize, u16_at(at + 2)?);
        if len < 4 {
            return None;
        }
        if kind == INET_DIAG_CGROUP_ID {
            let v = buf.get(at + 4..at + 12)?;
            return Some(u64::from_ne_bytes(v.try_into().ok()?));
        }
        at += (len + 3) & !3;
    }
    None
}

/// Cgroup id of the socket whose local end is `peer` and remote end is `local`. Ok(None): the
/// kernel has no such socket (not on this host) or reports no cgroup.
pub fn cgroup_id_of_peer(peer: SocketAddr, local: SocketAddr) -> io::Result<Option<u64>> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: setsockopt with a valid timeval of the right size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let req = request(peer, local);
    // SAFETY: req is a valid buffer; a netlink socket with no address sends to the kernel.
    let sent = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(parse(&buf[..n as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_cgroup_of_our_own_client_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let id = cgroup_id_of_peer(peer, listener.local_addr().unwrap()).unwrap();
        let path = super::super::cgroup_of_pid(std::process::id()).unwrap();
        let root = super::super::detect_cgroup2_root().unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(root.join(path.trim_start_matches('/'))).unwrap(),
        );
        assert_eq!(id, Some(ino), "the cgroup id is the inode of our cgroup directory");
        let nobody =
            cgroup_id_of_peer("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()).unwrap();
        assert_eq!(nobody, None);
    }
}
