//! Mount settings: the `-o key=value,...` strings of `mount`/fstab and the long flags, parsed
//! and validated into [`MountSettings`] before anything is mounted. Knows nothing of fuser's
//! types; `daemon.rs` turns the settings into a session configuration.

#![forbid(unsafe_code)]

use std::fmt;

use crate::size::{SizeError, parse_size};
use crate::stream::{Budgets, OnWriterClose, Policy, SlowReader};

/// Default per-reader channel budget (as the original: 6MB).
pub const DEFAULT_CHANNEL_BUFFER_SIZE: u64 = 6 << 20;
/// Default per-stream ring budget (as the original: 6MB).
pub const DEFAULT_RING_BUFFER_SIZE: u64 = 6 << 20;

/// Default `max_streams`: generous, but a bound on what any user can make.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// Default `max_readers` across a mount.
pub const DEFAULT_MAX_READERS: usize = 100_000;

/// The default `max_memory`: a quarter of the machine's memory (from /proc/meminfo), or
/// 1 GiB when it cannot be read.
pub fn default_max_memory() -> u64 {
    machine_memory().map_or(1 << 30, |m| m / 4)
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo).
pub fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// What a mount lets its users ask for at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of stream data and bookkeeping the whole daemon may hold.
    pub max_memory: u64,
    pub max_streams: usize,
    pub max_readers: usize,
    /// The largest ring and channel budgets a user other than root and the mount's owner
    /// may set on a stream (`None`: the mount's own budgets).
    pub max_ring_buffer_size: Option<u64>,
    pub max_channel_buffer_size: Option<u64>,
}

/// A rejected option: names the option and the value and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub option: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} '{}': {}",
            self.option,
            // Escaped so that the message stays on one line whatever the input holds.
            self.value.escape_debug(),
            self.reason
        )
    }
}

impl std::error::Error for OptionError {}

/// The error of `option` set to `value`.
pub(crate) fn err(option: &str, value: &str, reason: impl Into<String>) -> OptionError {
    OptionError {
        option: option.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Kernel mount flags and FUSE options passed through to the mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    pub noexec: bool,
    pub noatime: bool,
}

impl KernelOptions {
    /// The root directory's mode: open to everyone (sticky, like /tmp) when other users
    /// may use the mount, else only its user writes it.
    pub fn root_mode(allow_other: bool) -> u32 {
        if allow_other { 0o1777 } else { 0o755 }
    }
}

/// Everything `-o` can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSettings {
    pub budgets: Budgets,
    pub policy: Policy,
    pub kernel: KernelOptions,
    /// Owner and group given to new streams instead of the creator's.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Bits cleared from the mode of new streams, on top of the creator's umask.
    pub umask: Option<u32>,
    /// Name shown as the mount's source in /proc/mounts.
    pub fsname: String,
    pub limits: Limits,
    /// The distributed engine's options (`backend`, `nats_*`); no backend: the local one.
    pub nats: crate::nats::Settings,
    /// The HTTP gateway (`http=ADDR`, `http_token=FILE`, ...): see `http/config.rs`.
    pub http: crate::http::config::HttpOptions,
}

impl MountSettings {
    /// The metadata of a stream that `creator` (uid, gid) makes with `mode` under its own
    /// `umask`: the `uid=`/`gid=` options replace its ids, `umask=` clears bits on top.
    pub fn new_meta(&self, creator: (u32, u32), mode: u32, umask: u32) -> crate::stream::Meta {
        let now = std::time::SystemTime::now();
        crate::stream::Meta {
            mode: mode & 0o7777 & !(umask | self.umask.unwrap_or(0)),
            uid: self.uid.unwrap_or(creator.0),
            gid: self.gid.unwrap_or(creator.1),
            crtime: now,
            ctime: now,
        }
    }
}

impl Default for MountSettings {
    fn default() -> Self {
        MountSettings {
            budgets: Budgets::new(DEFAULT_CHANNEL_BUFFER_SIZE, DEFAULT_RING_BUFFER_SIZE),
            policy: Policy::default(),
            kernel: KernelOptions::default(),
            uid: None,
            gid: None,
            umask: None,
            fsname: "streamfs".to_string(),
            limits: Limits {
                max_memory: default_max_memory(),
                max_streams: DEFAULT_MAX_STREAMS,
                max_readers: DEFAULT_MAX_READERS,
                max_ring_buffer_size: None,
                max_channel_buffer_size: None,
            },
            nats: crate::nats::Settings::default(),
            http: crate::http::config::HttpOptions::default(),
        }
    }
}

impl MountSettings {
    /// The largest (ring, channel) budgets a user may set on a stream: root and the
    /// mount's owner up to `max_memory`, others up to `max_ring_buffer_size` and
    /// `max_channel_buffer_size` (default: the mount's own budgets).
    pub fn setting_limits(&self, privileged: bool) -> (u64, u64) {
        let l = &self.limits;
        if privileged {
            (l.max_memory, l.max_memory)
        } else {
            (
                l.max_ring_buffer_size.unwrap_or(self.budgets.ring),
                l.max_channel_buffer_size.unwrap_or(self.budgets.channel),
            )
        }
    }

    /// Settings that the options imply: `allow_other` lets other users in, so the kernel
    /// must check file modes (`default_permissions`), or nothing would keep one user from
    /// another's streams. Returns what was implied, for a log line.
    pub fn implied(&mut self) -> Option<&'static str> {
        let k = &mut self.kernel;
        (k.allow_other && !k.default_permissions).then(|| {
            k.default_permissions = true;
            "allow_other implies default_permissions: the kernel checks every stream's mode"
        })
    }
}

/// Parses a count limit (`max_streams`, `max_readers`): a whole number above 0.
fn parse_count(name: &str, value: &str) -> Result<usize, OptionError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(err(name, value, "expected a whole number above 0")),
    }
}

/// Parses `max_memory`: a size of at least 16 MiB (less could not hold one default ring).
pub fn parse_max_memory(value: &str) -> Result<u64, OptionError> {
    const NAME: &str = "max_memory";
    match parse_size(value) {
        Ok(n) if n < 16 << 20 => Err(err(NAME, value, "must be at least 16MB")),
        Ok(n) => Ok(n),
        Err(e) => Err(size_err(NAME, value, e)),
    }
}

/// Parses a channel buffer size: a size above 0.
pub fn parse_channel_size(value: &str) -> Result<u64, OptionError> {
    const NAME: &str = "channel_buffer_size";
    match parse_size(value) {
        Ok(0) => Err(err(
            NAME,
            value,
            "must be above 0 (each reader needs room for at least one write)",
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(size_err(NAME, value, e)),
    }
}

/// Parses a ring buffer size: any size; 0 disables replay.
pub fn parse_ring_size(value: &str) -> Result<u64, OptionError> {
    parse_size(value).map_err(|e| size_err("ring_buffer_size", value, e))
}

/// Parses a `slow_reader` policy.
pub fn parse_slow_reader(value: &str) -> Result<SlowReader, OptionError> {
    match value {
        "drop" => Ok(SlowReader::Drop),
        "block" => Ok(SlowReader::Block),
        "disconnect" => Ok(SlowReader::Disconnect),
        _ => Err(err(
            "slow_reader",
            value,
            "expected drop, block or disconnect",
        )),
    }
}

/// Parses an `on_writer_close` policy.
pub fn parse_on_writer_close(value: &str) -> Result<OnWriterClose, OptionError> {
    match value {
        "keep" => Ok(OnWriterClose::Keep),
        "eof" => Ok(OnWriterClose::Eof),
        _ => Err(err("on_writer_close", value, "expected keep or eof")),
    }
}

/// Parses a `start` setting: a start spec (see `start.rs`).
pub fn parse_start_option(value: &str) -> Result<crate::start::Start, OptionError> {
    crate::start::parse_start(value).map_err(|e| err("start", value, e.reason))
}

/// Parses a `replay_align` setting.
pub fn parse_align_option(value: &str) -> Result<crate::start::Align, OptionError> {
    crate::start::parse_align(value).map_err(|e| err("replay_align", value, e))
}

/// Parses `ring_buffer_time`: a duration, or `unlimited` (also `0`) for no time bound.
pub fn parse_ring_time(value: &str) -> Result<Option<std::time::Duration>, OptionError> {
    match value.trim() {
        "unlimited" | "0" => Ok(None),
        v => crate::start::parse_duration(v)
            .map(Some)
            .map_err(|e| err("ring_buffer_time", value, format!("{e}, or unlimited"))),
    }
}

fn size_err(name: &str, value: &str, e: SizeError) -> OptionError {
    err(name, value, e.to_string())
}

fn parse_id(name: &str, value: &str) -> Result<u32, OptionError> {
    value
        .parse::<u32>()
        .map_err(|_| err(name, value, "expected a numeric id"))
}

fn parse_umask(value: &str) -> Result<u32, OptionError> {
    match u32::from_str_radix(value, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(err(
            "umask",
            value,
            "expected octal permission bits, e.g. 022",
        )),
    }
}

/// Options of the generic mount helpers that mean nothing to streamfs: accepted and ignored,
/// as FUSE daemons do.
const IGNORED_FLAGS: &[&str] = &[
    // Always in force: streams are never executables' setuid bits or devices.
    "nosuid",
    "nodev",
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "suid",
    "dev",
    "exec",
    "atime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "async",
    "sync",
    "dirsync",
    "silent",
    "loud",
    "auto_cache",
    "noforget",
    "auto_unmount",
    "big_writes",
];

/// Option keys with a value that the helpers may pass and streamfs ignores.
const IGNORED_KEYS: &[&str] = &["subtype", "max_read", "blksize", "comment"];

impl MountSettings {
    /// Applies one `-o` string (comma-separated). Later options win over earlier ones.
    pub fn apply_options(&mut self, opts: &str) -> Result<(), OptionError> {
        let mut items: Vec<String> = Vec::new();
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            // `backend=nats://a:1,nats://b:2`: a URL after a backend URL belongs to it.
            match items.last_mut() {
                Some(last) if last.starts_with("backend=") && opt.contains("://") => {
                    last.push(',');
                    last.push_str(opt);
                }
                _ => items.push(opt.to_string()),
            }
        }
        for opt in &items {
            self.apply_option(opt)?;
        }
        Ok(())
    }

    fn apply_option(&mut self, opt: &str) -> Result<(), OptionError> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        if let Some(r) = value.and_then(|v| self.nats.apply(key, v)) {
            return r;
        }
        let k = &mut self.kernel;
        match (key, value) {
            ("channel_buffer_size", Some(v)) => self.budgets.channel = parse_channel_size(v)?,
            ("ring_buffer_size", Some(v)) => self.budgets.ring = parse_ring_size(v)?,
            ("slow_reader", Some(v)) => self.policy.slow_reader = parse_slow_reader(v)?,
            ("on_writer_close", Some(v)) => self.policy.on_writer_close = parse_on_writer_close(v)?,
            ("start", Some(v)) => self.policy.start = parse_start_option(v)?,
            ("replay_align", Some(v)) => self.policy.align = parse_align_option(v)?,
            ("ring_buffer_time", Some(v)) => self.budgets.ring_time = parse_ring_time(v)?,
            ("uid", Some(v)) => self.uid = Some(parse_id("uid", v)?),
            ("gid", Some(v)) => self.gid = Some(parse_id("gid", v)?),
            ("umask", Some(v)) => self.umask = Some(parse_umask(v)?),
            ("fsname", Some(v)) => self.fsname = v.to_string(),
            ("max_memory", Some(v)) => self.limits.max_memory = parse_max_memory(v)?,
            ("max_streams", Some(v)) => self.limits.max_streams = parse_count(key, v)?,
            ("max_readers", Some(v)) => self.limits.max_readers = parse_count(key, v)?,
            ("max_ring_buffer_size", Some(v)) => {
                self.limits.max_ring_buffer_size =
                    Some(parse_size(v).map_err(|e| size_err(key, v, e))?)
            }
            ("max_channel_buffer_size", Some(v)) => {
                self.limits.max_channel_buffer_size =
                    Some(parse_size(v).map_err(|e| size_err(key, v, e))?)
            }
            (key, Some(v)) if crate::http::config::HttpOptions::KEYS.contains(&key) => {
                if let Some(r) = self.http.apply(key, v) {
                    r?
                }
            }
            ("allow_other", None) => k.allow_other = true,
            ("allow_root", None) => k.allow_root = true,
            ("default_permissions", None) => k.default_permissions = true,
            ("ro", None) => k.read_only = true,
            ("noexec", None) => k.noexec = true,
            ("noatime", None) => k.noatime = true,
            (key, None) if IGNORED_FLAGS.contains(&key) || key.starts_with("x-") => {}
            (key, Some(_)) if IGNORED_KEYS.contains(&key) || key.starts_with("x-") => {}
            (
                "channel_buffer_size"
                | "ring_buffer_size"
                | "slow_reader"
                | "on_writer_close"
                | "start"
                | "replay_align"
                | "ring_buffer_time"
                | "uid"
                | "gid"
                | "umask"
                | "fsname"
                | "max_memory"
                | "max_streams"
                | "max_readers"
                | "max_ring_buffer_size"
                | "max_channel_buffer_size"
                | "backend"
                | "nats_creds"
                | "nats_replicas"
                | "nats_storage"
                | "nats_prefix"
                | "nats_timeout"
                | "http"
                | "http_token"
                | "http_read_token"
                | "http_cors"
                | "http_api_prefix"
                | "http_max_connections"
                | "http_coalesce",
                None,
            ) => {
                return Err(err(
                    "option",
                    opt,
                    format!("'{key}' needs a value: {key}=VALUE"),
                ));
            }
            _ => {
                return Err(err(
                    "option",
                    opt,
                    "unknown mount option (see streamfs --help for the list)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(s: &str) -> Result<MountSettings, OptionError> {
        let mut m = MountSettings::default();
        m.apply_options(s).map(|()| m)
    }

    #[test]
    fn defaults_are_six_megabytes() {
        let m = MountSettings::default();
        assert_eq!(m.budgets.channel, 6 * 1024 * 1024);
        assert_eq!(m.budgets.ring, 6 * 1024 * 1024);
    }

    #[test]
    fn sizes_from_options() {
        let m = apply("channel_buffer_size=256KB,ring_buffer_size=512KB").unwrap();
        assert_eq!(m.budgets.channel, 256 << 10);
        assert_eq!(m.budgets.ring, 512 << 10);
    }

    #[test]
    fn ring_zero_is_valid_channel_zero_is_not() {
        assert_eq!(apply("ring_buffer_size=0").unwrap().budgets.ring, 0);
        let e = apply("channel_buffer_size=0").unwrap_err();
        assert_eq!(e.option, "channel_buffer_size");
        assert_eq!(e.value, "0");
    }

    #[test]
    fn errors_name_option_and_value() {
        let e = apply("channel_buffer_size=12XB").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid channel_buffer_size '12XB': unknown unit"),
            "{e}"
        );
        let e = apply("ring_buffer_size=-1").unwrap_err();
        assert!(e.to_string().contains("'-1'"), "{e}");
        let e = apply("ring_buffer_size=").unwrap_err();
        assert_eq!(e.option, "ring_buffer_size");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = apply("rw,bogus=1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid option 'bogus=1': unknown mount option (see streamfs --help for the list)"
        );
        assert!(apply("channel_buffer_size").is_err());
    }

    #[test]
    fn helper_options_are_accepted() {
        let m = apply("rw,nosuid,nodev,noatime,allow_other,default_permissions,_netdev,nofail,x-systemd.automount,subtype=streamfs").unwrap();
        assert!(m.kernel.allow_other && m.kernel.default_permissions && m.kernel.noatime);
    }

    #[test]
    fn policies() {
        let m = apply("slow_reader=block,on_writer_close=eof").unwrap();
        assert_eq!(m.policy.slow_reader, SlowReader::Block);
        assert_eq!(m.policy.on_writer_close, OnWriterClose::Eof);
        assert_eq!(
            apply("slow_reader=disconnect").unwrap().policy.slow_reader,
            SlowReader::Disconnect
        );
        let e = apply("slow_reader=wait").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid slow_reader 'wait': expected drop, block or disconnect"
        );
        assert!(apply("on_writer_close=close").is_err());
    }

    #[test]
    fn limits() {
        let m =
            apply("max_memory=1GB,max_streams=5,max_readers=7,max_ring_buffer_size=1MB").unwrap();
        assert_eq!(m.limits.max_memory, 1 << 30);
        assert_eq!((m.limits.max_streams, m.limits.max_readers), (5, 7));
        assert_eq!(m.setting_limits(false), (1 << 20, m.budgets.channel));
        assert_eq!(m.setting_limits(true), (1 << 30, 1 << 30));
        assert!(
            apply("max_memory=1MB")
                .unwrap_err()
                .to_string()
                .contains("at least 16MB")
        );
        assert!(apply("max_streams=0").is_err());
        assert!(apply("max_readers=many").is_err());
        assert!(MountSettings::default().limits.max_memory > 0);
    }

    #[test]
    fn start_positions_and_ring_time() {
        let m = apply("start=live,replay_align=line,ring_buffer_time=2s").unwrap();
        assert_eq!(m.policy.start.to_string(), "live");
        assert_eq!(m.policy.align, crate::start::Align::Line);
        assert_eq!(m.budgets.ring_time, Some(std::time::Duration::from_secs(2)));
        assert_eq!(
            apply("ring_buffer_time=unlimited")
                .unwrap()
                .budgets
                .ring_time,
            None
        );
        for bad in ["start=soon", "replay_align=gop", "ring_buffer_time=2"] {
            let e = apply(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid "), "{e}");
            assert!(bad.ends_with(&e.value), "{e}");
        }
    }

    #[test]
    fn allow_other_implies_default_permissions() {
        let mut m = apply("allow_other").unwrap();
        assert!(m.implied().is_some());
        assert!(m.kernel.default_permissions);
        assert!(m.implied().is_none(), "said once");
        assert!(apply("ro").unwrap().implied().is_none());
    }

    #[test]
    fn ownership_options() {
        let m = apply("uid=1000,gid=100,umask=027").unwrap();
        assert_eq!(
            (m.uid, m.gid, m.umask),
            (Some(1000), Some(100), Some(0o027))
        );
        assert!(apply("uid=bob").is_err());
        assert!(apply("umask=999").is_err());
    }
}
