//! The fuser adapter: maps kernel requests onto the stream core (`namespace`, `stream`) and
//! core errors onto errnos. It exists so that the core can be tested without FUSE; every
//! handler has the same shape: a debug line, a call into the core, a reply.
//!
//! Files are opened with `FOPEN_DIRECT_IO | FOPEN_STREAM`: no page cache, no offsets, no
//! position lock (an O_RDWR handle whose read waits does not block writes through it).
//! Reads that find nothing queued are parked in the core with their `ReplyData` and answered
//! later from the thread that makes them answerable, so no session thread ever waits.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, PollEvents, PollFlags, PollNotifier,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyPoll, ReplyStatfs, ReplyXattr, Request, TimeOrNow,
};
use log::{debug, info, warn};

use crate::namespace::Namespace;
use crate::options::MountSettings;
use crate::stream::{Meta, Readiness, Stream, StreamError};
use crate::xattr;

/// Largest request the kernel is asked for (writes, and so reads): 1 MiB.
pub const MAX_REQUEST: u32 = 1 << 20;
const PAGE_SIZE: u32 = 4096;
/// Attributes change with every write; the kernel must not cache them.
const TTL: Duration = Duration::ZERO;
const ROOT: INodeNo = INodeNo::ROOT;

mod attrs;
pub mod gate;
mod io;
pub mod mount;
mod views;
pub mod watchdog;
mod writes;

use crate::namespace::NAME_MAX;
pub use attrs::requester_label;
use attrs::{check_name, in_group, is_regular, open_flags};
use io::{Handle, Io};

/// The errno for a core error (see `io::errno`), as fuser takes it.
fn errno(e: StreamError) -> Errno {
    Errno::from_i32(io::errno(e))
}

/// The filesystem as fuser sees it.
pub struct StreamFs {
    ns: Arc<Namespace>,
    /// Handles and the READ/WRITE path, shared with the gate.
    io: Arc<Io>,
    next_fh: AtomicU64,
    settings: MountSettings,
    /// The mounting user, owner of the root directory.
    owner: (u32, u32),
    /// `STREAM@SPEC` inodes (see `views.rs`).
    views: views::Views,
    mounted_at: SystemTime,
}

impl StreamFs {
    pub fn new(ns: Arc<Namespace>, settings: MountSettings) -> std::io::Result<StreamFs> {
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let owner = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(StreamFs {
            ns,
            io: Arc::new(Io::new(u64::from(MAX_REQUEST))?),
            next_fh: AtomicU64::new(1),
            settings,
            owner,
            views: views::Views::default(),
            mounted_at: SystemTime::now(),
        })
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.io.handle(fh.0)
    }

    /// The stream an inode names: a live one, or (with a handle) a removed one still open.
    fn stream_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Option<Arc<Stream>> {
        if let Some(h) = fh.and_then(|fh| self.handle(fh)) {
            return Some(h.stream.clone());
        }
        if let Some((s, _)) = self.views.get(ino.0) {
            return Some(s);
        }
        // fstat() of an open stream after rm: the kernel sends GETATTR (and fgetxattr sends
        // GETXATTR) with the inode only, so look among the open handles.
        self.ns.get(ino.0).or_else(|| {
            self.io
                .handles
                .lock()
                .values()
                .find(|h| h.stream.id() == ino.0)
                .map(|h| h.stream.clone())
        })
    }

    /// Registers a handle for `stream` opened with `flags` and returns its number. Fails
    /// when the namespace has `max_readers` readers.
    fn open_handle(
        &self,
        req: &Request,
        stream: Arc<Stream>,
        flags: OpenFlags,
        start: Option<crate::start::Start>,
    ) -> Result<FileHandle, StreamError> {
        let (read, write) = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        let label = requester_label(req.pid());
        let open = |label: String| match start {
            Some(start) => stream.open_reader_at(label, start),
            None => stream.open_reader(label),
        };
        let reader = match read.then(|| open(label.clone())) {
            Some(Err(e)) => {
                warn!("{label}: cannot open {}: {e}", self.name_of(&stream));
                return Err(e);
            }
            r => r.map(|r| r.expect("matched above")),
        };
        let writer = write.then(|| stream.open_writer());
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        crate::ratelimit::OPENS.log(|| {
            format!(
                "{} opened stream {} for {}",
                label,
                self.name_of(&stream),
                match (read, write) {
                    (true, true) => "reading and writing",
                    (true, false) => "reading",
                    _ => "writing",
                }
            )
        });
        self.io.handles.lock().insert(
            fh,
            Arc::new(Handle {
                stream,
                reader,
                writer,
                append: flags.0 & libc::O_APPEND != 0,
                track: Default::default(),
            }),
        );
        Ok(FileHandle(fh))
    }

    /// Starts the gate on the mount's /dev/fuse descriptor (see `gate.rs`) and the
    /// watchdog of interrupted requests; returns the descriptor for fuser's session.
    pub fn start_gate(
        &self,
        dev: std::os::fd::OwnedFd,
    ) -> std::io::Result<(std::os::fd::OwnedFd, watchdog::Watchdog)> {
        let fd = gate::start(dev, self.io.clone(), MAX_REQUEST as usize)?;
        let watchdog = watchdog::Watchdog::spawn(self.io.clone())?;
        Ok((fd, watchdog))
    }

    /// The stream `name` in the root, made for MKNOD and CREATE (the flag says whether it
    /// was made now): a regular file's mode, a name a new stream may take.
    fn new_stream(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Result<(Arc<Stream>, bool), Errno> {
        if parent != ROOT {
            return Err(Errno::ENOENT);
        }
        if !is_regular(mode) {
            // FIFOs, sockets and devices: every file here is a stream already.
            return Err(Errno::EPERM);
        }
        self.ns
            .create(name.as_bytes(), self.new_meta(req, mode, umask))
            .map_err(errno)
    }

    /// The stream's name for log lines, escaped ("#7 (removed)" once it has none).
    fn name_of(&self, stream: &Stream) -> String {
        match self.ns.name(stream.id()) {
            Some(n) => crate::escape::escape_bytes(&n),
            None => format!("#{} (removed)", stream.id()),
        }
    }

    fn new_meta(&self, req: &Request, mode: u32, umask: u32) -> Meta {
        self.settings.new_meta((req.uid(), req.gid()), mode, umask)
    }
}

impl Filesystem for StreamFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(nearest) = config.set_max_write(MAX_REQUEST) {
            warn!("kernel refused {MAX_REQUEST}-byte writes; using {nearest}");
            let _ = config.set_max_write(nearest);
            self.io
                .max_write
                .store(u64::from(nearest), Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        debug!("lookup(parent={parent:?}, name={name:?})");
        if parent != ROOT {
            return reply.error(Errno::ENOENT);
        }
        if let Err(e) = check_name(name) {
            return reply.error(e);
        }
        if let Some(s) = self.ns.lookup(name.as_bytes()) {
            return reply.entry(&TTL, &Self::stream_attr(&s), Generation(0));
        }
        // NAME@SPEC: the same stream at another start.
        let Some((base, spec)) = views::split(name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(s) = self.ns.lookup(base) else {
            return reply.error(Errno::ENOENT);
        };
        match crate::start::parse_start(&String::from_utf8_lossy(spec)) {
            Ok(start) => {
                let ino = self.views.lookup(&s, start);
                reply.entry(&TTL, &Self::view_attr(&s, ino, start), Generation(0))
            }
            Err(e) => {
                warn!("{}: {e}", crate::escape::escape_bytes(name.as_bytes()));
                reply.error(Errno::EINVAL)
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.views.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        debug!("getattr(ino={ino:?}, fh={fh:?})");
        if ino == ROOT {
            return reply.attr(&TTL, &self.root_attr());
        }
        if let Some((s, start)) = self.views.get(ino.0) {
            return reply.attr(&TTL, &Self::view_attr(&s, ino.0, start));
        }
        match self.stream_of(ino, fh) {
            Some(s) => reply.attr(&TTL, &Self::stream_attr(&s)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        debug!("setattr(ino={ino:?}, mode={mode:?}, uid={uid:?}, gid={gid:?}, size={size:?})");
        if ino == ROOT {
            return reply.error(Errno::EPERM);
        }
        let Some(stream) = self.stream_of(ino, fh) else {
            return reply.error(Errno::ENOENT);
        };
        // Truncation (`>` sends size=0) and times (`touch`) are accepted as no-ops: a stream
        // has no length to cut and its mtime is its last write.
        let caller = req.uid();
        if mode.is_some() || uid.is_some() || gid.is_some() {
            // POSIX: only root changes the owner; the owner may change the mode, and the
            // group to one it belongs to.
            let meta = stream.meta();
            let is_owner = caller == 0 || caller == meta.uid;
            let chown_ok = caller == 0 || uid.is_none_or(|u| u == meta.uid);
            let chgrp_ok =
                caller == 0 || gid.is_none_or(|g| g == meta.gid || in_group(req.pid(), g));
            if !is_owner || !chown_ok || !chgrp_ok {
                return reply.error(Errno::EPERM);
            }
            stream.update_meta(|m| {
                if let Some(mode) = mode {
                    m.mode = mode & 0o7777;
                }
                if let Some(uid) = uid {
                    m.uid = uid;
                }
                if let Some(gid) = gid {
                    m.gid = gid;
                }
            });
        }
        reply.attr(&TTL, &Self::stream_attr(&stream));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        debug!("mknod(parent={parent:?}, name={name:?}, mode={mode:o})");
        match self.new_stream(req, parent, name, mode, umask) {
            Ok((_, false)) => reply.error(Errno::EEXIST),
            Ok((s, true)) => reply.entry(&TTL, &Self::stream_attr(&s), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _r: &Request, _p: INodeNo, name: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        debug!("mkdir({name:?}): refused, the namespace is flat");
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!("unlink(parent={parent:?}, name={name:?})");
        if parent != ROOT {
            return reply.error(Errno::ENOENT);
        }
        match self.ns.remove(name.as_bytes()) {
            Ok(()) => {
                info!("stream {name:?} removed");
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        debug!("rmdir(parent={parent:?}, name={name:?})");
        if parent == ROOT && self.ns.lookup(name.as_bytes()).is_some() {
            reply.error(Errno::ENOTDIR)
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn symlink(
        &self,
        _r: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _t: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn link(&self, _r: &Request, _i: INodeNo, _p: INodeNo, _n: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        debug!("rename({name:?} -> {newname:?}, flags={flags})");
        if parent != ROOT || newparent != ROOT {
            return reply.error(Errno::ENOENT);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self
            .ns
            .rename(name.as_bytes(), newname.as_bytes(), no_replace)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        debug!("open(ino={ino:?}, flags={flags:?})");
        if ino == ROOT {
            return reply.error(Errno::EISDIR);
        }
        let target = match self.views.get(ino.0) {
            Some((s, start)) => Some((s, Some(start))),
            None => self.ns.get(ino.0).map(|s| (s, None)),
        };
        match target.map(|(s, start)| self.open_handle(req, s, flags, start)) {
            Some(Ok(fh)) => reply.opened(fh, open_flags()),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        debug!("create(parent={parent:?}, name={name:?}, mode={mode:o}, flags={flags:#x})");
        match self.new_stream(req, parent, name, mode, umask) {
            Ok((_, false)) if flags & libc::O_EXCL != 0 => reply.error(Errno::EEXIST),
            Ok((s, _)) => {
                let attr = Self::stream_attr(&s);
                match self.open_handle(req, s, OpenFlags(flags), None) {
                    Ok(fh) => reply.created(&TTL, &attr, Generation(0), fh, open_flags()),
                    Err(e) => reply.error(errno(e)),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    // READ and WRITE never reach fuser: the gate answers them (see `gate.rs` and `io.rs`).

    fn flush(&self, _r: &Request, _i: INodeNo, _fh: FileHandle, _l: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        debug!("release(ino={ino:?}, fh={fh:?})");
        // A write() in pieces whose last piece was full ends with the handle; dropping the
        // handle then unregisters its reader and writer.
        let h = self.io.handles.lock().remove(&fh.0);
        if let Some(h) = &h {
            h.end_open_unit();
        }
        drop(h);
        reply.ok();
    }

    fn fsync(&self, _r: &Request, _i: INodeNo, _fh: FileHandle, _d: bool, reply: ReplyEmpty) {
        // Nothing is persisted; every write is already visible to readers.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino == ROOT {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOTDIR);
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        debug!("readdir(ino={ino:?}, offset={offset})");
        if ino != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        // Cookies: 1 and 2 for "." and "..", then a stream's id + 2 (ids start at 2 and only
        // grow, so a listing resumes correctly while streams come and go).
        if offset < 1 && reply.add(ROOT, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset < 2 && reply.add(ROOT, 2, FileType::Directory, "..") {
            return reply.ok();
        }
        let after = offset.saturating_sub(2);
        for (id, name) in self.ns.list_after(after, 4096) {
            if reply.add(
                INodeNo(id),
                id + 2,
                FileType::RegularFile,
                OsStr::from_bytes(&name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Inodes are streams: max_streams of them, the free ones those not made yet (df -i).
        let max = self.ns.max_streams() as u64;
        let free = max.saturating_sub(self.ns.len() as u64);
        reply.statfs(0, 0, 0, max, free, PAGE_SIZE, NAME_MAX as u32, PAGE_SIZE);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        if ino == ROOT || self.ns.get(ino.0).is_some() {
            reply.ok();
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        debug!("getxattr(ino={ino:?}, name={name:?}, size={size})");
        let attrs = if ino == ROOT {
            xattr::root_attrs(&self.ns)
        } else {
            match self.stream_of(ino, None) {
                Some(s) => xattr::stream_attrs(&s),
                None => return reply.error(Errno::ENOENT),
            }
        };
        let Some((_, value)) = attrs.iter().find(|(n, _)| name.as_bytes() == n.as_bytes()) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        reply_xattr(reply, size, value.as_bytes());
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let attrs = if ino == ROOT {
            xattr::root_attrs(&self.ns)
        } else {
            match self.stream_of(ino, None) {
                Some(s) => xattr::stream_attrs(&s),
                None => return reply.error(Errno::ENOENT),
            }
        };
        let mut list = Vec::new();
        for (n, _) in &attrs {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        reply_xattr(reply, size, &list);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        debug!("setxattr(ino={ino:?}, name={name:?})");
        if ino == ROOT {
            return reply.error(Errno::EPERM);
        }
        // fsetxattr of a removed stream still open reaches it through its handle, as
        // fgetxattr does.
        let Some(stream) = self.stream_of(ino, None) else {
            return reply.error(Errno::ENOENT);
        };
        let name = name.as_bytes();
        if !name.starts_with(xattr::PREFIX.as_bytes()) {
            // Only streamfs's own settings can be set; nothing else is stored.
            return reply.error(Errno::from_i32(libc::ENOTSUP));
        }
        let meta = stream.meta();
        if req.uid() != 0 && req.uid() != meta.uid {
            return reply.error(Errno::EPERM);
        }
        let setting = &name[xattr::PREFIX.len()..];
        if flags & libc::XATTR_CREATE != 0 && xattr::is_attr(&stream, setting) {
            // Every setting exists already: XATTR_CREATE cannot create it.
            return reply.error(Errno::EEXIST);
        }
        let privileged = req.uid() == 0 || req.uid() == self.owner.0;
        let (ring, channel) = self.settings.setting_limits(privileged);
        let limits = xattr::SettingLimits {
            ring,
            channel,
            privileged,
        };
        let value = String::from_utf8_lossy(value);
        let shown = crate::escape::escape(value.trim());
        let setting_name = crate::escape::escape_bytes(setting);
        match xattr::apply_setting(&stream, setting, value.trim(), limits) {
            Ok(()) => {
                info!(
                    "stream {}: {setting_name} set to {shown} by uid {}",
                    self.name_of(&stream),
                    req.uid()
                );
                reply.ok()
            }
            Err(xattr::SetError::ReadOnly) => reply.error(Errno::EPERM),
            Err(xattr::SetError::Unknown) => reply.error(Errno::from_i32(libc::ENOTSUP)),
            Err(xattr::SetError::Invalid(e)) => {
                let why = e.to_string();
                warn!(
                    "stream {}: {why} (uid {})",
                    self.name_of(&stream),
                    req.uid()
                );
                stream.set_last_error(why);
                reply.error(Errno::EINVAL)
            }
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name.as_bytes().starts_with(xattr::PREFIX.as_bytes()) {
            reply.error(Errno::EPERM)
        } else {
            reply.error(Errno::from_i32(libc::ENODATA))
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // isatty() and friends: a stream is not a terminal.
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        debug!("poll(ino={ino:?}, fh={fh:?}, events={events}, flags={flags})");
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        // Writes never wait (slow readers drop), so a writer is always writable.
        let mut revents = if h.writer.is_some() {
            PollEvents::POLLOUT | PollEvents::POLLWRNORM
        } else {
            PollEvents::empty()
        };
        if let Some(reader) = &h.reader {
            let schedule = flags.contains(PollFlags::FUSE_POLL_SCHEDULE_NOTIFY);
            let wake: crate::stream::Wake = Box::new(move || {
                if schedule && let Err(e) = ph.notify() {
                    debug!("poll notification not delivered: {e}");
                }
            });
            match reader.poll(wake) {
                Readiness::Readable => revents |= PollEvents::POLLIN | PollEvents::POLLRDNORM,
                Readiness::Ended => revents |= PollEvents::POLLIN | PollEvents::POLLHUP,
                Readiness::Waiting => {}
            }
        }
        reply.poll(revents);
    }

    fn fallocate(
        &self,
        _r: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _l: u64,
        _m: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn lseek(
        &self,
        _r: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: i64,
        _w: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ESPIPE);
    }
}

/// Answers a getxattr/listxattr: the size when asked for it, ERANGE when it does not fit.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_error_has_an_errno() {
        assert_eq!(errno(StreamError::Removed), Errno::EPIPE);
        assert_eq!(errno(StreamError::NotFound), Errno::ENOENT);
        assert_eq!(errno(StreamError::Exists), Errno::EEXIST);
        assert_eq!(errno(StreamError::Interrupted), Errno::EINTR);
        assert_eq!(errno(StreamError::NoMemory), Errno::ENOSPC);
        assert_eq!(errno(StreamError::TooManyStreams), Errno::ENOSPC);
        assert_eq!(errno(StreamError::TooManyReaders), Errno::EMFILE);
        assert_eq!(errno(StreamError::InvalidName), Errno::EINVAL);
        assert_eq!(errno(StreamError::NameTooLong), Errno::ENAMETOOLONG);
    }
}
