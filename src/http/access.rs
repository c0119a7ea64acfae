//! Who may do what over HTTP without a token: the rights a local client's user has on the
//! mount (the kernel's rules: only its user without `allow_other`, the modes of the streams
//! and of the root with it). Knows the gateway's context, not how requests are shaped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::StatusCode;

use super::body::Body;
use super::peer;
use super::server::{Ctx, text};
use crate::stream::{Meta, Stream, StreamError};

/// Whose rights a connection has, found once when it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Every right: root, the mount's user, a client on another host, or any client when a
    /// token is set (the token then decides, and its holder acts as the mount's user).
    Owner,
    /// Another local user: what its uid may do on the mount.
    User(u32),
    /// A local client whose user the kernel could not name (its socket already gone, or
    /// the lookup failed): no right at all, rather than a guess.
    Unknown,
}

/// A connection's client: its address (what logs and listings show) and its rights.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub who: Who,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

impl Peer {
    /// The client of a connection just accepted from `remote` on `conn`: one exact lookup of
    /// its socket's owner, unless a token decides anyway.
    pub fn of(ctx: &Ctx, remote: SocketAddr, conn: &tokio::net::TcpStream) -> Peer {
        let who = if ctx.auth.full.is_some() || ctx.auth.read.is_some() {
            Who::Owner
        } else {
            identify(remote, conn.local_addr().ok())
        };
        Peer { addr: remote, who }
    }
}

/// The rights of the client at `remote` of a connection to `local`.
fn identify(remote: SocketAddr, local: Option<SocketAddr>) -> Who {
    let Some(local) = local else {
        return Who::Unknown;
    };
    let lookup = peer::socket_uid(remote, local);
    if let Err(e) = &lookup {
        crate::ratelimit::OPENS.log(|| format!("http: cannot tell who {remote} is: {e}"));
    }
    who_is(lookup.ok().flatten(), remote, local, |ip| {
        peer::is_host_address(ip).unwrap_or_else(|e| {
            crate::ratelimit::OPENS.log(|| format!("http: cannot list this host's addresses: {e}"));
            // Not knowing, the client may be local: no right rather than every right.
            true
        })
    })
}

/// The rights of the client at `remote` (to `local`) whose socket the kernel said is
/// `uid`'s, or could not find. A client that may be on this host gets its user's rights,
/// or none when the kernel did not name it; only a client from an address this host does
/// not have is another host's (`is_host` tells, for a canonical address).
fn who_is(
    uid: Option<u32>,
    remote: SocketAddr,
    local: SocketAddr,
    is_host: impl FnOnce(std::net::IpAddr) -> bool,
) -> Who {
    let (r, l) = (peer::canonical(remote), peer::canonical(local));
    match uid {
        Some(uid) if uid == 0 || uid == daemon_uid() => Who::Owner,
        Some(uid) => Who::User(uid),
        None if l.ip().is_loopback() || r.ip().is_loopback() || r.ip() == l.ip() => Who::Unknown,
        None if is_host(r.ip()) => Who::Unknown,
        None => Who::Owner,
    }
}

fn daemon_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

fn daemon_gid() -> u32 {
    // SAFETY: getegid cannot fail and touches no memory.
    unsafe { libc::getegid() }
}

/// What a request does, with the metadata of the stream it touches.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// Lists the root (listings, metrics, the page): `r` on the root.
    List,
    /// Reads a stream or its statistics: `r` on it.
    Read(&'a Meta),
    /// Appends to a stream: `w` on it.
    Append(&'a Meta),
    /// Makes a stream: `w` and `x` on the root.
    Create,
    /// Removes a stream: `w` and `x` on the root and, the root being sticky, owning it.
    Remove(&'a Meta),
}

/// The mount's side of a decision: whether other users may use it, and the root's owner.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub allow_other: bool,
    pub root_owner: (u32, u32),
}

impl Rules {
    fn of(ctx: &Ctx) -> Rules {
        Rules {
            allow_other: ctx.mount.kernel.allow_other,
            root_owner: (daemon_uid(), daemon_gid()),
        }
    }
}

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// Whether user `uid` (in the groups `in_group` says) has the `want` bits of a file of
/// mode `mode` owned by `owner`: the bits of its class only, as the kernel checks them.
fn may(uid: u32, in_group: &dyn Fn(u32) -> bool, mode: u32, owner: (u32, u32), want: u32) -> bool {
    let bits = if uid == owner.0 {
        mode >> 6
    } else if (mode >> 3) & want == mode & want {
        // Group and others have the same bits: no group lookup (NSS) needed.
        mode
    } else if in_group(owner.1) {
        mode >> 3
    } else {
        mode
    };
    bits & want == want
}

/// Whether `who` may do `op` on a mount of `rules`; the refusal says why.
pub fn decide(
    rules: Rules,
    who: Who,
    in_group: &dyn Fn(u32) -> bool,
    op: Op,
) -> Result<(), String> {
    let uid = match who {
        Who::Owner => return Ok(()),
        Who::Unknown => {
            return Err(
                "cannot tell which local user this connection is from (its socket \
                        is gone); send the request again, or use a token"
                    .into(),
            );
        }
        Who::User(uid) => uid,
    };
    if !rules.allow_other {
        return Err(format!(
            "this mount serves only its user (uid {}) without allow_other, over HTTP as on \
             the mount; uid {uid} needs a token (--http-token)",
            rules.root_owner.0
        ));
    }
    let root = crate::options::KernelOptions::root_mode(true);
    let on_root = |want| may(uid, in_group, root, rules.root_owner, want);
    let on = |m: &Meta, want| may(uid, in_group, m.mode, (m.uid, m.gid), want);
    let (ok, what) = match op {
        Op::List => (on_root(R), "list the streams"),
        Op::Read(m) => (on(m, R), "read this stream"),
        Op::Append(m) => (on(m, W), "write to this stream"),
        Op::Create => (on_root(W | X), "create a stream"),
        Op::Remove(m) => {
            let sticky = root & 0o1000 != 0;
            let owns = uid == m.uid || uid == rules.root_owner.0;
            (on_root(W | X) && (!sticky || owns), "remove this stream")
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("permission denied: uid {uid} may not {what}"))
    }
}

/// [`decide`] for a request of `peer` on this gateway, a refusal answered `403`.
pub fn check(ctx: &Ctx, peer: Peer, op: Op) -> Result<(), hyper::Response<Body>> {
    let rules = Rules::of(ctx);
    let in_group = |gid| match peer.who {
        Who::User(uid) => peer::in_group(uid, gid),
        _ => false,
    };
    decide(rules, peer.who, &in_group, op).map_err(|msg| text(StatusCode::FORBIDDEN, msg))
}

/// Whether `peer` may read a stream, for a listing of many: each group looked up once.
pub fn reader_of(ctx: &Ctx, peer: Peer) -> impl Fn(&Stream) -> bool {
    let rules = Rules::of(ctx);
    let groups = RefCell::new(HashMap::new());
    move |s: &Stream| {
        let in_group = |gid| match peer.who {
            Who::User(uid) => *groups
                .borrow_mut()
                .entry(gid)
                .or_insert_with(|| peer::in_group(uid, gid)),
            _ => false,
        };
        decide(rules, peer.who, &in_group, Op::Read(&s.meta())).is_ok()
    }
}

/// The metadata of a stream `peer` creates: the FUSE side's rule (the mount's `uid`/`gid`
/// options, else the creator's), mode 0644 less the mount's `umask`.
pub fn new_meta(ctx: &Ctx, peer: Peer) -> Meta {
    let creator = match peer.who {
        Who::User(uid) => (uid, peer::primary_gid(uid).unwrap_or(NOGROUP)),
        Who::Owner | Who::Unknown => (daemon_uid(), daemon_gid()),
    };
    ctx.mount.new_meta(creator, 0o644, 0)
}

/// The overflow gid: the group of a uid the user database does not know.
const NOGROUP: u32 = 65534;

/// The stream `name` for a writer: the existing one if `peer` may append to it, else a new
/// one if it may create it (owned by it). `err` answers the namespace's refusals.
pub fn create(
    ctx: &Ctx,
    peer: Peer,
    name: &[u8],
    err: impl Fn(StreamError) -> hyper::Response<Body>,
) -> Result<(Arc<Stream>, bool), hyper::Response<Body>> {
    // There: appending needs its `w`, no right to create.
    if let Some(stream) = ctx.ns.lookup(name) {
        check(ctx, peer, Op::Append(&stream.meta()))?;
        return Ok((stream, false));
    }
    check(ctx, peer, Op::Create)?;
    let (stream, created) = ctx.ns.create(name, new_meta(ctx, peer)).map_err(err)?;
    // There already, or made by someone else meanwhile: the writer needs its `w`.
    if !created {
        check(ctx, peer, Op::Append(&stream.meta()))?;
    }
    Ok((stream, created))
}

/// Removes `name` if `peer` may: the stream checked is the one removed; one that replaced
/// it meanwhile is checked in turn (a few times). `None`: there is no such stream.
pub fn remove(ctx: &Ctx, peer: Peer, name: &[u8]) -> Result<(), Option<hyper::Response<Body>>> {
    for _ in 0..8 {
        let stream = ctx.ns.lookup(name).ok_or(None)?;
        check(ctx, peer, Op::Remove(&stream.meta())).map_err(Some)?;
        match ctx.ns.remove_stream(name, &stream) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                let (status, msg) = super::streams::stream_error(&e);
                return Err(Some(text(status, msg)));
            }
        }
    }
    Err(Some(text(
        StatusCode::CONFLICT,
        "the stream was replaced again and again while being removed; try again",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn a_client_the_kernel_cannot_name_is_another_hosts_only_from_an_address_this_host_lacks() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let host = |ip: std::net::IpAddr| {
            ["10.1.1.1", "10.1.1.2", "fd00::2", "fe80::1"].contains(&ip.to_string().as_str())
        };
        let server = addr("10.1.1.1:8080");
        let v6 = addr("[fd00::2]:8080");
        for (what, uid, remote, local, want) in [
            (
                "a local user",
                Some(1004),
                "10.1.1.2:4000",
                server,
                Who::User(1004),
            ),
            (
                "the daemon's user",
                Some(daemon_uid()),
                "10.1.1.2:4000",
                server,
                Who::Owner,
            ),
            // Bound to a device, closed before the lookup, or a link-local scope: the
            // kernel finds no socket, but the address is this host's.
            (
                "unnamed, from another address of this host",
                None,
                "10.1.1.2:4000",
                server,
                Who::Unknown,
            ),
            (
                "unnamed, IPv4 through a dual-stack socket",
                None,
                "[::ffff:10.1.1.2]:4000",
                addr("[::ffff:10.1.1.1]:8080"),
                Who::Unknown,
            ),
            (
                "unnamed, link-local",
                None,
                "[fe80::1%2]:4000",
                v6,
                Who::Unknown,
            ),
            (
                "unnamed, the same address",
                None,
                "10.1.1.1:4000",
                server,
                Who::Unknown,
            ),
            (
                "unnamed, loopback",
                None,
                "127.0.0.1:4000",
                addr("127.0.0.1:8080"),
                Who::Unknown,
            ),
            ("another host", None, "192.0.2.7:4000", server, Who::Owner),
            (
                "another host over IPv6",
                None,
                "[2001:db8::7]:4000",
                v6,
                Who::Owner,
            ),
        ] {
            assert_eq!(who_is(uid, addr(remote), local, host), want, "{what}");
        }
    }

    fn meta(mode: u32, uid: u32, gid: u32) -> Meta {
        let now = SystemTime::now();
        Meta {
            mode,
            uid,
            gid,
            crtime: now,
            ctime: now,
        }
    }

    #[test]
    fn decisions_follow_the_kernels_rules() {
        const A: u32 = 1001;
        const B: u32 = 1002;
        const STAFF: u32 = 50;
        let a600 = meta(0o600, A, A);
        let a644 = meta(0o644, A, A);
        let a660 = meta(0o660, A, STAFF);
        let a606 = meta(0o606, A, STAFF);
        let b_groups = |g| g == STAFF;
        let none = |_| false;
        let open = Rules {
            allow_other: true,
            root_owner: (0, 0),
        };
        let closed = Rules {
            allow_other: false,
            root_owner: (0, 0),
        };
        type Case<'a> = (&'a str, Rules, Who, &'a dyn Fn(u32) -> bool, Op<'a>, bool);
        let cases: &[Case] = &[
            (
                "owner reads a 0600",
                open,
                Who::Owner,
                &none,
                Op::Read(&a600),
                true,
            ),
            (
                "owner, closed mount",
                closed,
                Who::Owner,
                &none,
                Op::Remove(&a600),
                true,
            ),
            ("unknown lists", open, Who::Unknown, &none, Op::List, false),
            (
                "other user, closed: list",
                closed,
                Who::User(B),
                &none,
                Op::List,
                false,
            ),
            (
                "other user, closed: read",
                closed,
                Who::User(B),
                &none,
                Op::Read(&a644),
                false,
            ),
            (
                "other user, closed: create",
                closed,
                Who::User(B),
                &none,
                Op::Create,
                false,
            ),
            ("lists", open, Who::User(B), &none, Op::List, true),
            (
                "reads another's 0600",
                open,
                Who::User(B),
                &none,
                Op::Read(&a600),
                false,
            ),
            (
                "writes another's 0600",
                open,
                Who::User(B),
                &none,
                Op::Append(&a600),
                false,
            ),
            (
                "reads its own 0600",
                open,
                Who::User(A),
                &none,
                Op::Read(&a600),
                true,
            ),
            (
                "writes its own 0600",
                open,
                Who::User(A),
                &none,
                Op::Append(&a600),
                true,
            ),
            (
                "reads a 0644",
                open,
                Who::User(B),
                &none,
                Op::Read(&a644),
                true,
            ),
            (
                "writes a 0644",
                open,
                Who::User(B),
                &none,
                Op::Append(&a644),
                false,
            ),
            (
                "group member writes 0660",
                open,
                Who::User(B),
                &b_groups,
                Op::Append(&a660),
                true,
            ),
            (
                "non-member reads 0660",
                open,
                Who::User(B),
                &none,
                Op::Read(&a660),
                false,
            ),
            // The kernel checks the class's bits only: a member gets the group's none.
            (
                "member of 0606's group",
                open,
                Who::User(B),
                &b_groups,
                Op::Read(&a606),
                false,
            ),
            (
                "other on 0606",
                open,
                Who::User(B),
                &none,
                Op::Read(&a606),
                true,
            ),
            (
                "creates (root 1777)",
                open,
                Who::User(B),
                &none,
                Op::Create,
                true,
            ),
            (
                "removes another's (sticky)",
                open,
                Who::User(B),
                &none,
                Op::Remove(&a644),
                false,
            ),
            (
                "removes its own",
                open,
                Who::User(A),
                &none,
                Op::Remove(&a600),
                true,
            ),
        ];
        for (what, rules, who, groups, op, want) in cases {
            let got = decide(*rules, *who, *groups, *op);
            assert_eq!(got.is_ok(), *want, "{what}: {got:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let closed = Rules {
            allow_other: false,
            root_owner: (1000, 1000),
        };
        let msg = decide(closed, Who::User(1002), &|_| false, Op::List).unwrap_err();
        assert!(msg.contains("serves only its user (uid 1000)"), "{msg}");
        assert!(msg.contains("token"), "{msg}");
        let msg = decide(closed, Who::Unknown, &|_| false, Op::List).unwrap_err();
        assert!(msg.contains("cannot tell which local user"), "{msg}");
    }

    #[test]
    fn a_connection_whose_socket_is_gone_gets_no_right() {
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let here: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(identify(gone, Some(here)), Who::Unknown);
        assert_eq!(identify(gone, None), Who::Unknown);
        // Another host's client, unknown to this kernel: the operator's public bind.
        let far: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let public: SocketAddr = "198.51.100.1:80".parse().unwrap();
        assert_eq!(identify(far, Some(public)), Who::Owner);
    }
}
