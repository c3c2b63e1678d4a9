//! The cgroup of a process on this host that connected to one of our explicit listeners: the
//! connection's socket inode from /proc/net/tcp{,6}, the process holding it from /proc/*/fd, its
//! cgroup from /proc/PID/cgroup. A few milliseconds on a busy host, once per connection (keep-alive
//! amortises it); callers run it on a blocking thread.
use std::net::{IpAddr, SocketAddr};

/// `/proc/net/tcp` address format: the IPv4 address as a host-order hex u32, the port in hex.
fn proc_addr(a: SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.octets()), a.port()),
        IpAddr::V6(v6) => {
            let b = v6.octets();
            let words: String = (0..4)
                .map(|i| {
                    format!(
                        "{:08X}",
                        u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]])
                    )
                })
                .collect();
            format!("{words}:{:04X}", a.port())
        }
    }
}

/// Inode of the socket whose local end is `peer` and remote end is `local` (the client's side).
fn socket_inode(peer: SocketAddr, local: SocketAddr) -> Option<u64> {
    let (want_local, want_remote) = (proc_addr(peer), proc_addr(local));
    let table = if peer.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote).then(|| f[9].parse().ok()).flatten()
    })
}

/// Pid of a process holding socket `inode`.
fn pid_of_socket(inode: u64) -> Option<u32> {
    let needle = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == needle.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The cgroup v2 path of the local process that owns the client end of `peer` -> `local`.
pub fn cgroup_path_of_local_peer(peer: SocketAddr, local: SocketAddr) -> Option<String> {
    let inode = socket_inode(peer, local)?;
    let pid = pid_of_socket(inode)?;
    super::cgroup_of_pid(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let path = cgroup_path_of_local_peer(peer, listener.local_addr().unwrap());
        assert_eq!(path, super::super::cgroup_of_pid(std::process::id()), "the client socket is ours");
    }
}
