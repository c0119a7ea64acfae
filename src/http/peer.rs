//! Who is at the other end of a local TCP connection: the uid owning the client's socket,
//! asked of the kernel with one exact NETLINK_SOCK_DIAG lookup, and that user's groups. It
//! knows nothing of HTTP or of the rules (`access.rs` decides); the libc calls live here.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR` (linux/netlink.h).
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST`: one exact lookup, not a dump.
const NLM_F_REQUEST: u16 = 1;
/// `INET_DIAG_NOCOOKIE`: match by the 4-tuple alone.
const NOCOOKIE: u32 = !0;
/// Bytes of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// Offset of `idiag_uid` in `struct inet_diag_msg`: family, state, timer, retrans (4),
/// the socket id (48), expires, rqueue, wqueue (12); `idiag_inode` follows it.
const UID_AT: usize = 64;
const INODE_AT: usize = 68;
/// How long the kernel may take to answer: it answers at once, this only bounds a surprise.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The uid owning the TCP socket whose local address is `client` and whose peer is
/// `server`: the client's end of a connection this process accepted. `Ok(None)` when the
/// kernel knows no such socket that a process still holds (the client is on another host,
/// or has closed it: a closed socket's remnant is reported as uid 0, which it is not).
pub fn socket_uid(client: SocketAddr, server: SocketAddr) -> io::Result<Option<u32>> {
    let (client, server) = (canonical(client), canonical(server));
    let family = match (client, server) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => libc::AF_INET,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => libc::AF_INET6,
        _ => return Ok(None),
    };
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(libc::NETLINK_SOCK_DIAG)),
    )?;
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    // Unaddressed, a netlink message goes to the kernel.
    sock.send(&request(family as u8, client, server))?;
    let mut answer = [0u8; 512];
    let n = (&sock).read(&mut answer)?;
    parse_answer(&answer[..n])
}

/// Whether `ip` (canonical, see [`canonical`]) is an address of one of this host's
/// interfaces: a connection from it comes from a process of this host, however the lookup
/// of its socket fares (bound to a device, closed already, or through a link-local scope
/// the exact lookup does not name).
pub fn is_host_address(ip: IpAddr) -> io::Result<bool> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list that is freed below, once.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = false;
    let mut node = list;
    while !node.is_null() && !found {
        // SAFETY: `node` is an element of the list getifaddrs returned, alive until
        // freeifaddrs; its address, when not null, is a sockaddr of the family it names,
        // so it is read as that family's struct.
        let (addr, next) = unsafe {
            let ifa = &*node;
            let addr = if ifa.ifa_addr.is_null() {
                None
            } else {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        Some(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                    }
                    _ => None,
                }
            };
            (addr, ifa.ifa_next)
        };
        found = addr == Some(ip);
        node = next;
    }
    // SAFETY: the list getifaddrs returned, not used after this.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) as the IPv4 one: the
/// client's socket is an IPv4 socket then.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => SocketAddr::new(v6.to_canonical(), a.port()),
        IpAddr::V4(_) => a,
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for the TCP socket `src` -> `dst`, host byte
/// order for the header, network order for ports and addresses (as the kernel wants).
fn request(family: u8, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDR + 56);
    let len = (NLMSG_HDR + 56) as u32;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    m.push(family);
    m.push(libc::IPPROTO_TCP as u8);
    m.push(0); // idiag_ext: no extensions
    m.push(0);
    // idiag_states: any (an exact lookup ignores it; the answer's inode tells more).
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&src.port().to_be_bytes());
    m.extend_from_slice(&dst.port().to_be_bytes());
    for a in [src.ip(), dst.ip()] {
        let mut words = [0u8; 16];
        match a {
            IpAddr::V4(v4) => words[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => words.copy_from_slice(&v6.octets()),
        }
        m.extend_from_slice(&words);
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if: any
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    debug_assert_eq!(m.len(), len as usize);
    m
}

/// The uid in the kernel's answer; `None` for "no such socket" (ENOENT) or one without an
/// inode: closed by its process (an orphan, or a TIME_WAIT remnant whose uid reads 0).
fn parse_answer(a: &[u8]) -> io::Result<Option<u32>> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag answer");
    let u16_at = |i: usize| a.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |i: usize| {
        a.get(i..i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    match u16_at(4).ok_or_else(short)? {
        NLMSG_ERROR => {
            let errno = -(u32_at(NLMSG_HDR).ok_or_else(short)? as i32);
            if errno == libc::ENOENT {
                Ok(None)
            } else {
                Err(io::Error::from_raw_os_error(errno))
            }
        }
        SOCK_DIAG_BY_FAMILY => {
            let inode = u32_at(NLMSG_HDR + INODE_AT).ok_or_else(short)?;
            let uid = u32_at(NLMSG_HDR + UID_AT).ok_or_else(short)?;
            Ok((inode != 0).then_some(uid))
        }
        t => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected sock_diag answer type {t}"),
        )),
    }
}

/// The primary gid of `uid` from the user database, or `None` for a uid it does not know.
pub fn primary_gid(uid: u32) -> Option<u32> {
    with_passwd(uid, |pw| pw.pw_gid)
}

/// Whether `uid` belongs to `gid`: its primary group or a supplementary one in the user
/// database (what a login of that user gets; a process may have dropped or added some).
pub fn in_group(uid: u32, gid: u32) -> bool {
    with_passwd(uid, |pw| {
        if pw.pw_gid == gid {
            return true;
        }
        let mut groups = vec![0 as libc::gid_t; 64];
        loop {
            let mut n = groups.len() as libc::c_int;
            // SAFETY: pw_name is the NUL-terminated name in the live passwd entry; `groups`
            // holds `n` elements and getgrouplist writes at most `n`, setting `n` to how
            // many it has (or needs, when it returns -1).
            let r =
                unsafe { libc::getgrouplist(pw.pw_name, pw.pw_gid, groups.as_mut_ptr(), &mut n) };
            if r >= 0 {
                return groups[..n.max(0) as usize].contains(&gid);
            }
            if groups.len() >= 1 << 16 {
                return false;
            }
            groups.resize((n.max(0) as usize).max(groups.len() * 2), 0);
        }
    })
    .unwrap_or(false)
}

/// Runs `f` on the passwd entry of `uid`.
fn with_passwd<T>(uid: u32, f: impl FnOnce(&libc::passwd) -> T) -> Option<T> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value of this plain C struct.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `pw` and `buf` outlive the call and `buf.len()` is its true size;
        // getpwuid_r points pw's strings into `buf` and `found` at `pw` or null.
        let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 || found.is_null() {
            return None;
        }
        // `f` sees `pw` while `buf`, which its strings point into, is alive.
        return Some(f(&pw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn finds_the_uid_of_a_connection_made_here_v4_and_v6() {
        // SAFETY: geteuid cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(l) = TcpListener::bind(bind) else {
                continue; // no IPv6 on this machine
            };
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, remote) = l.accept().unwrap();
            assert_eq!(remote, c.local_addr().unwrap());
            let uid = socket_uid(remote, s.local_addr().unwrap()).unwrap();
            assert_eq!(uid, Some(me), "{bind}");
            // The client closes first: its socket becomes an orphan, then a FIN_WAIT2
            // remnant reported as uid 0. Never is it anyone's from then on.
            drop(c);
            for _ in 0..20 {
                assert_eq!(socket_uid(remote, s.local_addr().unwrap()).unwrap(), None);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(s);
            assert_eq!(socket_uid(remote, l.local_addr().unwrap()).unwrap(), None);
        }
    }

    #[test]
    fn finds_an_ipv4_client_of_an_ipv6_listener() {
        let Ok(l) = TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this machine
        };
        let port = l.local_addr().unwrap().port();
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, remote) = l.accept().unwrap();
        assert!(remote.is_ipv6(), "{remote}");
        // SAFETY: geteuid cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        assert_eq!(
            socket_uid(remote, s.local_addr().unwrap()).unwrap(),
            Some(me)
        );
    }

    #[test]
    fn an_unknown_connection_has_no_uid() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(socket_uid(a, b).unwrap(), None);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:5".parse().unwrap());
    }

    #[test]
    fn root_is_in_its_own_group() {
        assert_eq!(primary_gid(0), Some(0));
        assert!(in_group(0, 0));
        assert!(!in_group(u32::MAX - 7, 0));
    }
}
