//! The node-local address pods are redirected to. A pod's 127.0.0.1 is its own, so the programs
//! rewrite intercepted connections to an address every pod can route to and that only this node
//! answers: a link-local /32 (169.254.0.0/16 is never routed off-link) on a `dummy` interface the
//! agent creates, the way node-local DNS caches do. Kernels without the dummy driver get the
//! address on `lo` instead (the same effect: a local address, reached through the pod's veth).
//! Spoken to the kernel over rtnetlink directly; no `ip` binary is needed in the image.
use std::{ffi::CString, io, net::Ipv4Addr};

const NLMSG_HDR: usize = 16;
const IFINFO: usize = 16;
const IFADDR: usize = 8;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NLA_F_NESTED: u16 = 1 << 15;

/// Where the address ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub interface: String,
    /// The agent created the interface (and removes it on uninstall).
    pub created_interface: bool,
}

/// Makes sure `addr/32` is on `interface` (created as a dummy link, up), or on `lo` when the
/// kernel has no dummy driver. Idempotent: an agent restart finds both already there.
pub fn ensure(addr: Ipv4Addr, interface: &str) -> io::Result<Placed> {
    let (ifname, created) = match ifindex(interface) {
        Some(_) => (interface.to_string(), false),
        None => match create_dummy(interface) {
            Ok(()) => (interface.to_string(), true),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                tracing::warn!(
                    interface,
                    "this kernel has no dummy driver; putting the node-local address on lo"
                );
                ("lo".to_string(), false)
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("creating dummy link {interface}: {e}"))),
        },
    };
    let index = ifindex(&ifname).ok_or_else(|| io::Error::other(format!("{ifname} vanished")))?;
    set_up(index)?;
    match address(libc::RTM_NEWADDR, index, addr, (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16) {
        Ok(()) => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("adding {addr}/32 to {ifname}: {e}"))),
    }
    Ok(Placed { interface: ifname, created_interface: created })
}

/// Removes what [`ensure`] added: the address, and the interface when the agent made it.
pub fn remove(addr: Ipv4Addr, placed: &Placed) -> io::Result<()> {
    if let Some(index) = ifindex(&placed.interface) {
        match address(libc::RTM_DELADDR, index, addr, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(e),
        }
        if placed.created_interface {
            let mut msg = header(libc::RTM_DELLINK, 0);
            msg.extend_from_slice(&ifinfo(index, 0, 0));
            talk(msg)?;
        }
    }
    Ok(())
}

/// Whether `addr` is assigned to `interface` now (for tests and status).
pub fn present(addr: Ipv4Addr, interface: &str) -> bool {
    let Ok(out) =
        std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", interface]).output()
    else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {addr}/32"))
}

fn ifindex(name: &str) -> Option<i32> {
    let c = CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i as i32)
}

fn create_dummy(name: &str) -> io::Result<()> {
    let mut msg = header(libc::RTM_NEWLINK, (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16);
    msg.extend_from_slice(&ifinfo(0, 0, 0));
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    attr(&mut msg, IFLA_IFNAME, &n);
    let mut kind = Vec::new();
    attr(&mut kind, IFLA_INFO_KIND, b"dummy");
    attr(&mut msg, IFLA_LINKINFO | NLA_F_NESTED, &kind);
    talk(msg)
}

fn set_up(index: i32) -> io::Result<()> {
    let mut msg = header(libc::RTM_NEWLINK, 0);
    msg.extend_from_slice(&ifinfo(index, libc::IFF_UP as u32, libc::IFF_UP as u32));
    talk(msg)
}

fn address(kind: u16, index: i32, addr: Ipv4Addr, flags: u16) -> io::Result<()> {
    let mut msg = header(kind, flags);
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    msg.extend_from_slice(&[libc::AF_INET as u8, 32, 0, libc::RT_SCOPE_UNIVERSE]);
    msg.extend_from_slice(&(index as u32).to_ne_bytes());
    debug_assert_eq!(msg.len(), NLMSG_HDR + IFADDR);
    attr(&mut msg, IFA_LOCAL, &addr.octets());
    attr(&mut msg, IFA_ADDRESS, &addr.octets());
    talk(msg)
}

fn header(kind: u16, flags: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes()); // length, set in talk()
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    m
}

/// struct ifinfomsg { family, pad, type, index, flags, change }
fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; IFINFO] {
    let mut b = [0u8; IFINFO];
    b[0] = libc::AF_UNSPEC as u8;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn attr(m: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    m.extend_from_slice(&(len as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(data);
    m.resize(m.len().next_multiple_of(4), 0);
}

/// Sends one request and reads its acknowledgement (an NLMSG_ERROR carrying 0 or -errno).
fn talk(mut msg: Vec<u8>) -> io::Result<()> {
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: plain socket syscalls on a descriptor we own and close below.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            let sent = libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const sa).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut buf = [0u8; 4096];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < (NLMSG_HDR + 4) as isize {
                return Err(io::Error::other("short netlink answer"));
            }
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            if kind != libc::NLMSG_ERROR as u16 {
                return Err(io::Error::other(format!("unexpected netlink message type {kind}")));
            }
            let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) }
        })();
        libc::close(fd);
        result
    }
}
