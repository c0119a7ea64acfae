//! Mounting: directly with mount(2) as root, or as a normal user through the setuid helper
//! `fusermount3`, which mounts and passes the open /dev/fuse back over a Unix socket
//! (`_FUSE_COMMFD`). Either way the mount's type is `fuse.streamfs`, as `mount -t` and
//! fstab name it. Knows nothing of streams or of the FUSE session.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::options::KernelOptions;

/// The options of a mount: `KernelOptions` plus the name shown as its source.
pub struct MountRequest<'a> {
    pub fsname: &'a str,
    pub options: &'a KernelOptions,
}

impl MountRequest<'_> {
    /// The options in fusermount3's `-o` syntax (it always adds nosuid and nodev).
    fn fusermount_options(&self) -> String {
        let k = self.options;
        let mut opts = vec![format!("fsname={}", self.fsname), "subtype=streamfs".into()];
        for (on, name) in [
            (k.allow_other, "allow_other"),
            (k.allow_root && !k.allow_other, "allow_root"),
            (k.default_permissions, "default_permissions"),
            (k.read_only, "ro"),
            (k.noexec, "noexec"),
            (k.noatime, "noatime"),
        ] {
            if on {
                opts.push(name.to_string());
            }
        }
        opts.join(",")
    }
}

/// Mounts `mountpoint` and returns the FUSE device: directly when root, else through
/// fusermount3.
pub fn mount(mountpoint: &Path, req: &MountRequest<'_>) -> io::Result<OwnedFd> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        mount_direct(mountpoint, req)
    } else {
        mount_fusermount(mountpoint, &req.fusermount_options())
    }
}

fn cstring(bytes: &[u8]) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// mount(2) of type fuse.streamfs, as root.
fn mount_direct(mountpoint: &Path, req: &MountRequest<'_>) -> io::Result<OwnedFd> {
    let k = req.options;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/fuse: {e}")))?;
    let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={uid},group_id={gid}",
        dev.as_raw_fd()
    );
    if k.default_permissions {
        data.push_str(",default_permissions");
    }
    if k.allow_other || k.allow_root {
        // The kernel knows only allow_other; root-only access is checked by the session.
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    for (on, flag) in [
        (k.read_only, libc::MS_RDONLY),
        (k.noexec, libc::MS_NOEXEC),
        (k.noatime, libc::MS_NOATIME),
    ] {
        if on {
            flags |= flag;
        }
    }
    let source = cstring(req.fsname.as_bytes())?;
    let target = cstring(mountpoint.as_os_str().as_bytes())?;
    let data = cstring(data.as_bytes())?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"fuse.streamfs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

/// Mounts through fusermount3 with `options` (its -o syntax) and returns the FUSE device.
fn mount_fusermount(mountpoint: &Path, options: &str) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let their_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe, to let the helper inherit its end of the socket.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(their_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(their_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run fusermount3 (install Debian's fuse3): {e}"),
        )
    })?;
    drop(theirs);
    let received = receive_fd(&ours);
    drop(ours);
    let out = child.wait_with_output()?;
    match received {
        Ok(fd) if out.status.success() => Ok(fd),
        _ => {
            let msg = String::from_utf8_lossy(&out.stderr);
            let msg = msg.trim().trim_start_matches("fusermount3: ");
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                if msg.is_empty() {
                    "fusermount3 failed".to_string()
                } else {
                    msg.to_string()
                },
            ))
        }
    }
}

/// Receives one file descriptor sent with SCM_RIGHTS.
fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    // Room for one control message carrying one int, aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call, and
    // the CMSG macros only walk within `control`, whose length is given in msg_controllen.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n > 0 {
                break;
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "fusermount3 sent no device",
                ));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "fusermount3 sent no file descriptor",
            ));
        }
        let fd: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
