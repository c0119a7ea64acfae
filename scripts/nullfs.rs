//! nullfs: the benchmark's ceiling. A FUSE filesystem that does nothing: every name is one
//! regular file, writes are discarded, reads are answered at once with zeros. It is mounted
//! and served exactly as streamfs is (same mount code, 1 MiB requests, direct I/O stream
//! handles, two session threads), so `scripts/bench` can report streamfs as a fraction of
//! what any fuser daemon moves on the same machine in the same run.
//!
//!     nullfs MOUNTPOINT      serves in the foreground until unmounted (umount MOUNTPOINT)
//!
//! Built by `cargo build --release --example nullfs`; not installed, not part of streamfs.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, Session, SessionACL, WriteFlags,
};
use streamfs::fuse::MAX_REQUEST;
use streamfs::fuse::mount::{MountRequest, mount};
use streamfs::options::KernelOptions;

const FILE: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(60);

/// What every read answers with: zeros, as many as asked (one request is at most 1 MiB).
static ZEROS: [u8; MAX_REQUEST as usize] = [0; MAX_REQUEST as usize];

struct NullFs {
    started: SystemTime,
}

impl NullFs {
    fn attr(&self, ino: INodeNo) -> FileAttr {
        let dir = ino == INodeNo::ROOT;
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o666 },
            nlink: if dir { 2 } else { 1 },
            // SAFETY: getuid and getgid cannot fail.
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            rdev: 0,
            blksize: MAX_REQUEST,
            flags: 0,
        }
    }
}

fn handle_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_STREAM | FopenFlags::FOPEN_NONSEEKABLE
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        config
            .set_max_write(MAX_REQUEST)
            .map(drop)
            .map_err(|_| std::io::Error::other("the kernel refused 1 MiB writes"))
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT {
            reply.entry(&TTL, &self.attr(FILE), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr(ino));
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.attr(&TTL, &self.attr(ino));
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(1), handle_flags());
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.created(
            &TTL,
            &self.attr(FILE),
            Generation(0),
            FileHandle(1),
            handle_flags(),
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.data(&ZEROS[..(size as usize).min(ZEROS.len())]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.written(data.len() as u32);
    }

    fn flush(&self, _r: &Request, _i: INodeNo, _fh: FileHandle, _l: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if offset == 0 {
            let _ = reply.add(INodeNo::ROOT, 1, FileType::Directory, ".")
                || reply.add(INodeNo::ROOT, 2, FileType::Directory, "..")
                || reply.add(FILE, 3, FileType::RegularFile, "null");
        }
        reply.ok();
    }
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(mountpoint), None) = (args.next().map(PathBuf::from), args.next()) else {
        eprintln!("usage: nullfs MOUNTPOINT");
        std::process::exit(2);
    };
    let fd = match mount(
        &mountpoint,
        &MountRequest {
            fsname: "nullfs",
            options: &KernelOptions::default(),
        },
    ) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("nullfs: cannot mount {}: {e}", mountpoint.display());
            std::process::exit(1);
        }
    };
    let mut config = Config::default();
    config.n_threads = Some(2);
    let fs = NullFs {
        started: SystemTime::now(),
    };
    let result = Session::from_fd(fs, fd, SessionACL::Owner, config).and_then(|s| s.run());
    if let Err(e) = result {
        eprintln!("nullfs: {e}");
        std::process::exit(1);
    }
}
