//! The statistics a mount exposes as extended attributes (`getfattr -d -m - FILE`): plain
//! decimal text under `user.streamfs.`, rendered from the snapshot of `snapshot.rs` (which
//! holds the list of fields), and the per-stream settings `setfattr` changes. Knows nothing
//! of FUSE.

#![forbid(unsafe_code)]

use crate::namespace::Namespace;
use crate::options::{
    OptionError, parse_channel_size, parse_on_writer_close, parse_ring_size, parse_slow_reader,
};
use crate::snapshot::{MountSnapshot, StreamSnapshot};
use crate::stream::Stream;

/// Prefix of every attribute streamfs answers.
pub const PREFIX: &str = "user.streamfs.";

/// The media type of a stream whose `content_type` was never set.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Parses a `content_type` setting: a media type `type/subtype` with optional parameters,
/// visible ASCII and spaces only (it becomes an HTTP header), at most 255 bytes.
pub fn parse_content_type(value: &str) -> Result<String, OptionError> {
    let v = value.trim();
    let (kind, rest) = v.split_once('/').unwrap_or(("", ""));
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let subtype = rest.split(';').next().unwrap_or("").trim();
    let printable = v.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if v.len() <= 255 && printable && token(kind) && token(subtype) {
        Ok(v.to_string())
    } else {
        Err(OptionError {
            option: "content_type".into(),
            value: value.to_string(),
            reason: "expected a media type such as video/mp2t or text/plain; charset=utf-8".into(),
        })
    }
}

/// A stream's attributes, in a stable order: the snapshot's fields, the number of reader
/// pages, then the pages.
pub fn stream_attrs(stream: &Stream) -> Vec<(String, String)> {
    // The name is not an attribute: the file has it.
    let snap = StreamSnapshot::of(b"", stream);
    // Labels are escaped when made (see `fuse::requester_label`): one line each.
    let lines: Vec<String> = snap.readers.iter().map(|r| r.line() + "\n").collect();
    let pages = reader_pages(&lines);
    snap.fields()
        .into_iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .chain([(
            format!("{PREFIX}reader_pages"),
            pages.len().max(1).to_string(),
        )])
        .chain(pages_attrs(pages))
        .collect()
}

/// Most bytes of one `reader_list` page: the kernel refuses attribute values above 64 KiB.
pub const READER_PAGE_BYTES: usize = 60 << 10;

/// Whole reader lines grouped into pages of at most [`READER_PAGE_BYTES`].
fn reader_pages(lines: &[String]) -> Vec<String> {
    let mut pages = vec![String::new()];
    for l in lines {
        let page = pages.last_mut().expect("never empty");
        if !page.is_empty() && page.len() + l.len() > READER_PAGE_BYTES {
            pages.push(String::new());
        }
        pages.last_mut().expect("never empty").push_str(l);
    }
    pages
}

/// `reader_list` (the first page), then `reader_list.1`, `reader_list.2`, ...
fn pages_attrs(pages: Vec<String>) -> impl Iterator<Item = (String, String)> {
    pages.into_iter().enumerate().map(|(i, p)| {
        let name = if i == 0 {
            format!("{PREFIX}reader_list")
        } else {
            format!("{PREFIX}reader_list.{i}")
        };
        (name, p)
    })
}

/// The root's attributes: totals over live streams, and the daemon's pid (used by
/// `streamfs stop` to find the daemon through the mount).
pub fn root_attrs(ns: &Namespace) -> Vec<(String, String)> {
    let log = crate::daemon::log_destination().unwrap_or_default();
    MountSnapshot::of(ns, log)
        .fields()
        .into_iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect()
}

/// Why a per-stream setting was refused.
#[derive(Debug)]
pub enum SetError {
    /// A statistic: it cannot be set.
    ReadOnly,
    /// Not an attribute of streamfs.
    Unknown,
    /// A setting with a bad value; the message names it.
    Invalid(OptionError),
}

/// The largest budgets a setting may ask for: (ring, channel), with the option that sets
/// each limit, for the error message.
#[derive(Clone, Copy, Debug)]
pub struct SettingLimits {
    pub ring: u64,
    pub channel: u64,
    /// Which limit applies: "max_memory" for root and the mount's owner, else the mount's
    /// max_ring_buffer_size / max_channel_buffer_size.
    pub privileged: bool,
}

impl SettingLimits {
    pub const NONE: SettingLimits = SettingLimits {
        ring: u64::MAX,
        channel: u64::MAX,
        privileged: true,
    };
}

fn within(name: &str, value: &str, v: u64, max: u64, limit: &str) -> Result<u64, SetError> {
    if v > max {
        return Err(SetError::Invalid(OptionError {
            option: name.to_string(),
            value: value.to_string(),
            reason: format!(
                "above the limit of {} ({limit})",
                crate::size::HumanSize(max)
            ),
        }));
    }
    Ok(v)
}

/// Refuses a policy that cannot hold across hosts for a stream an engine shares.
fn shared_policy_ok(
    stream: &Stream,
    value: &str,
    change: impl FnOnce(&mut crate::stream::Policy),
) -> Result<(), SetError> {
    if stream.publisher().is_none() {
        return Ok(());
    }
    let mut p = stream.stats().policy;
    change(&mut p);
    match crate::engine::shared_policy_problem(&p) {
        Some((option, _)) => Err(SetError::Invalid(crate::options::OptionError {
            option: option.to_string(),
            value: value.to_string(),
            reason: "cannot hold across hosts with --backend".to_string(),
        })),
        None => Ok(()),
    }
}

/// Applies `setfattr -n user.streamfs.NAME -v VALUE` to a stream (NAME without the prefix),
/// validated like the mount options and bounded by `limits`.
pub fn apply_setting(
    stream: &Stream,
    name: &[u8],
    value: &str,
    limits: SettingLimits,
) -> Result<(), SetError> {
    let (ring_limit, channel_limit) = if limits.privileged {
        ("max_memory", "max_memory")
    } else {
        ("max_ring_buffer_size", "max_channel_buffer_size")
    };
    // Each setting changes its own field under the stream's lock: two setfattr at once,
    // of different settings, both take effect.
    match name {
        b"channel_buffer_size" => {
            let v = parse_channel_size(value).map_err(SetError::Invalid)?;
            let v = within(
                "channel_buffer_size",
                value,
                v,
                limits.channel,
                channel_limit,
            )?;
            stream.update_budgets(|b| b.channel = v);
        }
        b"ring_buffer_size" => {
            let v = parse_ring_size(value).map_err(SetError::Invalid)?;
            let v = within("ring_buffer_size", value, v, limits.ring, ring_limit)?;
            stream.update_budgets(|b| b.ring = v);
        }
        b"slow_reader" => {
            let v = parse_slow_reader(value).map_err(SetError::Invalid)?;
            shared_policy_ok(stream, value, |p| p.slow_reader = v)?;
            stream.update_policy(|p| p.slow_reader = v);
        }
        b"on_writer_close" => {
            let v = parse_on_writer_close(value).map_err(SetError::Invalid)?;
            shared_policy_ok(stream, value, |p| p.on_writer_close = v)?;
            stream.update_policy(|p| p.on_writer_close = v);
        }
        b"start" => {
            let v = crate::options::parse_start_option(value).map_err(SetError::Invalid)?;
            stream.update_policy(|p| p.start = v);
        }
        b"replay_align" => {
            let v = crate::options::parse_align_option(value).map_err(SetError::Invalid)?;
            stream.update_policy(|p| p.align = v);
        }
        b"ring_buffer_time" => {
            let v = crate::options::parse_ring_time(value).map_err(SetError::Invalid)?;
            stream.update_budgets(|b| b.ring_time = v);
        }
        b"content_type" => {
            let v = parse_content_type(value).map_err(SetError::Invalid)?;
            stream.set_content_type(Some(&v));
        }
        _ if is_attr(stream, name) => return Err(SetError::ReadOnly),
        _ => return Err(SetError::Unknown),
    }
    Ok(())
}

/// Whether `name` (without the prefix) is one of the stream's attributes.
pub fn is_attr(stream: &Stream, name: &[u8]) -> bool {
    stream_attrs(stream)
        .iter()
        .any(|(n, _)| n.as_bytes()[PREFIX.len()..] == *name)
}
