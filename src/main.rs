//! The `streamfs` command: parses options, then mounts (daemonized unless `-f`), or stops or
//! inspects a running mount. Bad input exits 2 before anything is mounted; a failed mount
//! exits 1 with a one-line reason.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use streamfs::daemon::{self, DaemonSettings};
use streamfs::options::{MountSettings, OptionError, parse_channel_size, parse_ring_size};

const AFTER_HELP: &str = "\
Mount options (-o key=value,... as with mount -t fuse.streamfs and /etc/fstab):
  channel_buffer_size=SIZE  bytes each reader may have queued before writes are dropped
                            for it (default 6MB; must be above 0)
  ring_buffer_size=SIZE     history replayed to a reader when it opens (default 6MB;
                            0 disables replay)
  slow_reader=POLICY        what a write does to a reader whose buffer is full:
                            drop (default) drops it for that reader; block waits until
                            every reader has room (lossless, like a pipe); disconnect
                            gives that reader the rest of its queue, then EOF
  on_writer_close=POLICY    keep (default): readers wait for a next writer; eof: when the
                            last writer closes, readers get the rest, then EOF
  uid=N, gid=N              owner and group of new streams (default: the creator)
  umask=OOO                 mode bits cleared from new streams (octal, e.g. 022)
  allow_other, allow_root   let other users (or root) use the mount (allow_other needs
                            user_allow_other in /etc/fuse.conf for non-root mounts)
  default_permissions       let the kernel enforce file modes
  ro, nosuid, nodev, noexec, noatime, fsname=NAME
  Generic mount options (rw, auto, noauto, user, users, _netdev, nofail, x-*, ...) are
  accepted and ignored.

Per-stream overrides: setfattr -n user.streamfs.ring_buffer_size -v 16MB FILE (also
channel_buffer_size, slow_reader, on_writer_close).
Statistics (getfattr -d -m - FILE, decimal text under user.streamfs.): bytes_written,
writes, readers, writers, ring_bytes, ring_start, dropped_writes, dropped_bytes,
write_rate, blocked_writes, reader_list; on the mount point: totals and the daemon's pid.

SIZE is a number of bytes or a number with a unit: B, KB, MB, GB (1024-based,
case-insensitive; KiB, MiB, GiB accepted), decimals allowed: 524288, 512KB, 1.5MB.

Examples:
  streamfs /mnt/live
  streamfs /mnt/hd --channel-buffer-size 16MB --ring-buffer-size 32MB -f
  mount -t fuse.streamfs streamfs /mnt/live -o channel_buffer_size=512KB
  streamfs stop /mnt/live";

/// A FUSE filesystem whose files are live, in-memory broadcast streams: every reader of a
/// file gets every byte written to it after a replay of its recent history.
#[derive(Parser, Debug)]
#[command(
    name = "streamfs",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// [SOURCE] MOUNTPOINT: the directory to mount on (SOURCE, as given by mount(8), is
    /// shown as the filesystem's name)
    #[arg(value_name = "MOUNTPOINT", num_args = 1..=2, required = true)]
    paths: Vec<PathBuf>,

    /// Mount options, comma-separated (see below); may be repeated
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,

    /// Per-reader buffer [default: 6MB]; overrides -o channel_buffer_size
    #[arg(long, value_name = "SIZE")]
    channel_buffer_size: Option<String>,

    /// Per-stream replay history [default: 6MB; 0 disables]; overrides -o ring_buffer_size
    #[arg(long, value_name = "SIZE")]
    ring_buffer_size: Option<String>,

    /// Stay in the foreground, logging to stderr
    #[arg(short = 'f', long)]
    foreground: bool,

    /// Log every request (debug level); RUST_LOG overrides
    #[arg(short = 'd', long)]
    debug: bool,

    /// Log to this file instead of syslog when daemonized
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// End every stream of a mount (readers get EOF), unmount it and end its daemon
    Stop {
        mountpoint: PathBuf,
        /// Seconds to wait for the daemon to finish
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Show the streams of a mount: readers, writers, ring fill, drops
    Status {
        mountpoint: PathBuf,
        /// Print JSON for scripts
        #[arg(long)]
        json: bool,
        /// Refresh every second, like top
        #[arg(long)]
        watch: bool,
    },
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("streamfs: {msg}");
    ExitCode::from(2)
}

fn settings(cli: Cli) -> Result<DaemonSettings, String> {
    let mut mount = MountSettings::default();
    for o in &cli.options {
        mount.apply_options(o).map_err(|e| e.to_string())?;
    }
    let flag_err =
        |flag: &str, e: OptionError| format!("invalid {flag} '{}': {}", e.value, e.reason);
    if let Some(v) = &cli.channel_buffer_size {
        mount.budgets.channel =
            parse_channel_size(v).map_err(|e| flag_err("--channel-buffer-size", e))?;
    }
    if let Some(v) = &cli.ring_buffer_size {
        mount.budgets.ring = parse_ring_size(v).map_err(|e| flag_err("--ring-buffer-size", e))?;
    }
    let (source, mountpoint) = match cli.paths.as_slice() {
        [mp] => (None, mp.clone()),
        [src, mp] => (Some(src.clone()), mp.clone()),
        _ => unreachable!("clap takes one or two paths"),
    };
    if let Some(src) = source {
        if mount.fsname == "streamfs" {
            mount.fsname = src.to_string_lossy().into_owned();
        }
    }
    let meta = std::fs::metadata(&mountpoint)
        .map_err(|e| format!("invalid mountpoint '{}': {e}", mountpoint.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "invalid mountpoint '{}': not a directory",
            mountpoint.display()
        ));
    }
    let mountpoint = mountpoint
        .canonicalize()
        .map_err(|e| format!("invalid mountpoint '{}': {e}", mountpoint.display()))?;
    Ok(DaemonSettings {
        mountpoint,
        mount,
        foreground: cli.foreground,
        debug: cli.debug,
        log_file: cli.log_file,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Stop {
            mountpoint,
            timeout,
        }) => match streamfs::control::stop(&mountpoint, Duration::from_secs(timeout)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("streamfs: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Status {
            mountpoint,
            json,
            watch,
        }) => loop {
            match streamfs::control::collect(&mountpoint) {
                Ok(rows) => {
                    let out = if json {
                        streamfs::control::render_json(&rows)
                    } else {
                        streamfs::control::render_table(&rows)
                    };
                    if watch {
                        print!("\x1b[H\x1b[2J");
                    }
                    print!("{out}");
                }
                Err(e) => {
                    eprintln!("streamfs: {e}");
                    return ExitCode::FAILURE;
                }
            }
            if !watch {
                return ExitCode::SUCCESS;
            }
            std::thread::sleep(Duration::from_secs(1));
        },
        None => {
            let s = match settings(cli) {
                Ok(s) => s,
                Err(e) => return usage_error(e),
            };
            if daemon::is_mount_point(&s.mountpoint) {
                eprintln!(
                    "streamfs: {}",
                    daemon::StartError::AlreadyMounted(s.mountpoint.display().to_string())
                );
                return ExitCode::FAILURE;
            }
            match daemon::run(s) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("streamfs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
