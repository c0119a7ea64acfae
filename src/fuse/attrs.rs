//! What the adapter answers about files: attributes of the root, of streams and of views,
//! the names a stream may take, and who asked.

use std::ffi::OsStr;

use fuser::{Errno, FileAttr, FileType, FopenFlags, INodeNo};

use super::{MAX_REQUEST, PAGE_SIZE, ROOT, StreamFs};
use crate::options::KernelOptions;
use crate::stream::Stream;

impl StreamFs {
    pub(super) fn root_attr(&self) -> FileAttr {
        FileAttr {
            ino: ROOT,
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind: FileType::Directory,
            perm: KernelOptions::root_mode(self.settings.kernel.allow_other) as u16,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: PAGE_SIZE,
            flags: 0,
        }
    }

    pub(super) fn stream_attr(stream: &Stream) -> FileAttr {
        let stats = stream.stats();
        let meta = stream.meta();
        FileAttr {
            ino: INodeNo(stream.id()),
            size: stats.written_bytes,
            blocks: 0,
            atime: stats.mtime,
            mtime: stats.mtime,
            ctime: meta.ctime.max(stats.mtime),
            crtime: meta.crtime,
            kind: FileType::RegularFile,
            perm: meta.mode as u16,
            nlink: u32::from(!stats.removed),
            uid: meta.uid,
            gid: meta.gid,
            rdev: 0,
            // Programs size their buffers by st_blksize (cat reads max(128 KiB, blksize)):
            // whole requests keep readers as fast as 1 MiB writers.
            blksize: MAX_REQUEST,
            flags: 0,
        }
    }

    /// A view's attributes: its stream's, under its own inode; a snapshot's size is the
    /// bytes it would replay now, so that tools that trust `st_size` copy exactly that.
    pub(super) fn view_attr(stream: &Stream, ino: u64, start: crate::start::Start) -> FileAttr {
        let mut attr = Self::stream_attr(stream);
        attr.ino = INodeNo(ino);
        if start.snapshot {
            attr.size = stream
                .resolve(start)
                .map_or(0, |(from, end)| end.saturating_sub(from));
        }
        attr
    }
}

/// "pid 42 (cat)": who made a request, for log lines and `reader_list`. The pid is the
/// requesting thread. The command name is chosen by the process (`prctl`, `exec -a`), so it
/// is escaped: the label never holds a control character.
pub fn requester_label(pid: u32) -> String {
    let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    format!("pid {pid} ({})", crate::escape::escape_bytes(comm))
}

/// ENAMETOOLONG for looking up names longer than `NAME_MAX` bytes, as every Linux
/// filesystem (new names are checked by the namespace).
pub(super) fn check_name(name: &OsStr) -> Result<(), Errno> {
    if name.len() > crate::namespace::NAME_MAX {
        Err(Errno::ENAMETOOLONG)
    } else {
        Ok(())
    }
}

/// Whether process `pid` belongs to group `gid` (its effective or a supplementary group),
/// from /proc: what chgrp by a stream's owner is allowed to choose.
pub(super) fn in_group(pid: u32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // "Gid: real effective saved fs", "Groups: supplementary..."
    field("Gid:").get(1) == Some(&gid) || field("Groups:").contains(&gid)
}

pub(super) fn is_regular(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0
}

pub(super) fn open_flags() -> FopenFlags {
    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_STREAM | FopenFlags::FOPEN_NONSEEKABLE
}
