//! The `streamfs` command: parses options, then mounts (daemonized unless `-f`), or stops or
//! inspects a running mount. Bad input exits 2 before anything is mounted; a failed mount
//! exits 1 with a one-line reason.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use streamfs::control::{self, show};
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
                            every reader has room (lossless, like a pipe; 5 s at most on
                            the mount, then it cuts that reader off); disconnect gives
                            that reader the rest of its queue, then EOF
  on_writer_close=POLICY    keep (default): readers wait for a next writer; eof: when the
                            last writer closes, readers get the rest, then EOF
  uid=N, gid=N              owner and group of new streams (default: the creator)
  umask=OOO                 mode bits cleared from new streams (octal, e.g. 022)
  allow_other, allow_root   let other users (or root) use the mount (allow_other needs
                            user_allow_other in /etc/fuse.conf for non-root mounts)
  default_permissions       let the kernel enforce file modes (implied by allow_other)
  start=SPEC                where readers that name no start begin (default start: the
                            whole ring; live, -10s, -64KB, snapshot, ...: see STREAM@SPEC)
  replay_align=ALIGN        where replays begin: write (default), line, or mpegts (at a
                            keyframe, after the latest PAT and PMT)
  ring_buffer_time=DURATION drop history older than this (ms, s, m, h; default unlimited)
  max_memory=SIZE           all the stream data the daemon may hold (default a quarter of
                            this machine's memory: {MAX_MEMORY}); at the limit the oldest
                            history is shed first, then the readers furthest behind
  max_streams=N             streams at once (default 10000; more: ENOSPC)
  max_readers=N             readers at once (default 100000; more: EMFILE)
  max_ring_buffer_size=SIZE, max_channel_buffer_size=SIZE
                            the largest budgets users other than root and the mount's
                            owner may setfattr (default: the mount's own budgets)
  http=ADDR                 serve the streams over HTTP too (PORT alone: loopback); also
                            http_token=FILE, http_read_token=FILE, http_cors=ORIGIN,
                            http_api_prefix=PATH, http_max_connections=N (default 20000),
                            http_coalesce=MS (default 60; 0: off): the --http flags below
  ro, nosuid, nodev, noexec, noatime, fsname=NAME
  Generic mount options (rw, auto, noauto, user, users, _netdev, nofail, x-*, ...) are
  accepted and ignored.

Per-stream overrides: setfattr -n user.streamfs.ring_buffer_size -v 16MB FILE (also
channel_buffer_size, slow_reader, on_writer_close, start, replay_align, ring_buffer_time,
content_type: the Content-Type HTTP readers get).
Start positions: cat FILE@live, FILE@-10s, FILE@-64KB, FILE@OFFSET, FILE@snapshot (the
history, then end of file; stat gives its size), FILE@-10s,snapshot.
Statistics (getfattr -d -m - FILE, decimal text under user.streamfs.): bytes_written,
writes, readers, writers, ring_bytes, ring_start, dropped_writes, dropped_bytes,
write_rate, blocked_writes, last_error, reader_list (paged: reader_pages, reader_list.N);
on the mount point: totals, memory and max_memory, the log's place and the daemon's pid.

SIZE is a number of bytes or a number with a unit: B, KB, MB, GB (1024-based,
case-insensitive; KiB, MiB, GiB accepted), decimals allowed: 524288, 512KB, 1.5MB.

Examples:
  streamfs /mnt/live
  streamfs /mnt/hd --channel-buffer-size 16MB --ring-buffer-size 32MB -f
  mount -t fuse.streamfs streamfs /mnt/live -o channel_buffer_size=512KB
  streamfs /mnt/live --http 127.0.0.1:8080    (curl -N http://127.0.0.1:8080/streams/cam1)
  streamfs serve --http 0.0.0.0:8080 --http-token /etc/streamfs/token
  streamfs stop /mnt/live

HTTP gateway: GET /streams/NAME[?from=SPEC][&format=sse] (replay, then live),
HEAD /streams/NAME, PUT or POST /streams/NAME[?frame=line|ts] (append the body),
DELETE /streams/NAME, GET /streams, /streams/NAME/readers, /metrics, / (status page),
and the original server's /api/v1/files, /directories, /stat, /health.";

/// The usage lines, shown by `--help` and with every usage error: clap's own line cannot show
/// the three forms and their options.
const USAGE: &str = "\
streamfs [-f] [-d] [--log-file FILE] [-o OPTIONS] [--channel-buffer-size SIZE]
                [--ring-buffer-size SIZE] [--http ADDR [--http-token FILE] ...]
                [SOURCE] MOUNTPOINT
       streamfs serve --http ADDR [-d] [-o OPTIONS] [--http-token FILE] ...
       streamfs stop [--timeout SECONDS] MOUNTPOINT
       streamfs status [--json] [--watch] MOUNTPOINT";

const SERVE_USAGE: &str = "streamfs serve --http ADDR [-d] [--log-file FILE] [-o OPTIONS] \
    [--channel-buffer-size SIZE] [--ring-buffer-size SIZE] [--http-token FILE] \
    [--http-read-token FILE] [--http-cors ORIGIN] [--http-api-prefix PATH]";

const SERVE_LONG_ABOUT: &str = "\
Serve streams over HTTP only, without mounting (for containers without /dev/fuse).

Stays in the foreground, logging to stderr (or --log-file), until SIGTERM or SIGINT, which
ends every stream. Takes the mount's -o options (budgets, policies, limits) and the --http
flags; --http is required.";

const STOP_USAGE: &str = "streamfs stop [--timeout SECONDS] MOUNTPOINT";
const STATUS_USAGE: &str = "streamfs status [--json] [--watch] MOUNTPOINT";

const STOP_LONG_ABOUT: &str = "\
End every stream of a mount (readers get EOF), unmount it and end its daemon.

MOUNTPOINT must be the root of a mounted fuse.streamfs filesystem, as /proc/self/mountinfo
says. The daemon's pid is read from the mount's user.streamfs.pid attribute and signalled
(SIGTERM) only if that process runs as the user who mounted it (user_id= in mountinfo) and
holds /dev/fuse open; anything else is refused. On success it prints what it ended and waits
until the mount is gone and the daemon has exited.";

const STATUS_LONG_ABOUT: &str = "\
Show the streams of a mount: readers, writers, rate, ring fill, drops, and a line per reader.

MOUNTPOINT must be the root of a mounted fuse.streamfs filesystem. Streams the caller may
not read are left out, and counted. --json prints one JSON document on one line (schema 1:
every statistic of the mount and of each stream, readers as objects). --watch refreshes
every second: on a terminal it redraws the screen; otherwise it prints the table again
after a blank line, or with --json one document per line (JSON Lines), until stopped.";

/// A FUSE filesystem whose files are live, in-memory broadcast streams: every reader of a
/// file gets every byte written to it after a replay of its recent history.
#[derive(Parser, Debug)]
#[command(
    name = "streamfs",
    version,
    override_usage = USAGE,
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
    // Values starting with '-' reach the size parser, which names the problem.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    channel_buffer_size: Option<String>,

    /// Per-stream replay history [default: 6MB; 0 disables]; overrides -o ring_buffer_size
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    ring_buffer_size: Option<String>,

    /// Share the streams with every host mounted on these NATS JetStream servers
    /// (nats://HOST:PORT, comma-separated); overrides -o backend
    #[arg(long, value_name = "URLS")]
    backend: Option<String>,

    /// NATS credentials file for --backend; overrides -o nats_creds
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,

    /// Stay in the foreground, logging to stderr
    #[arg(short = 'f', long)]
    foreground: bool,

    /// Log every request (debug level); RUST_LOG overrides
    #[arg(short = 'd', long)]
    debug: bool,

    /// Log to this file instead of syslog when daemonized
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,

    #[command(flatten)]
    http: streamfs::http::config::HttpArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve streams over HTTP only, without mounting, in the foreground
    #[command(override_usage = SERVE_USAGE, long_about = SERVE_LONG_ABOUT)]
    Serve {
        /// Mount options, comma-separated (see streamfs --help); may be repeated
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Per-reader buffer [default: 6MB]
        #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
        channel_buffer_size: Option<String>,
        /// Per-stream replay history [default: 6MB; 0 disables]
        #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
        ring_buffer_size: Option<String>,
        /// Log every request (debug level); RUST_LOG overrides
        #[arg(short = 'd', long)]
        debug: bool,
        /// Log to this file instead of stderr
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        #[command(flatten)]
        http: streamfs::http::config::HttpArgs,
    },
    /// End every stream of a mount (readers get EOF), unmount it and end its daemon
    #[command(override_usage = STOP_USAGE, long_about = STOP_LONG_ABOUT)]
    Stop {
        /// The root of a mounted streamfs
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
        /// Seconds to wait for the streams to end, the unmount and the daemon's exit; after
        /// that, exit 1
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        timeout: u64,
    },
    /// Show the streams of a mount: readers, writers, ring fill, drops
    #[command(override_usage = STATUS_USAGE, long_about = STATUS_LONG_ABOUT)]
    Status {
        /// The root of a mounted streamfs
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
        /// Print JSON for scripts (one document on one line)
        #[arg(long)]
        json: bool,
        /// Refresh every second (redraws a terminal; JSON Lines or repeated tables otherwise)
        #[arg(long)]
        watch: bool,
    },
    /// Print the man page or shell completions, made from this command line's definition
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

#[derive(Subcommand, Debug)]
enum Generate {
    /// The man page, as roff (man -l -)
    Man,
    /// A shell's completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Why a mount was not attempted: bad input (exit 2) or a refusal (exit 1).
enum SetupError {
    Usage(String),
    Refused(String),
}

impl From<String> for SetupError {
    fn from(s: String) -> SetupError {
        SetupError::Usage(s)
    }
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("streamfs: {msg}");
    ExitCode::from(2)
}

fn failure(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("streamfs: {msg}");
    ExitCode::FAILURE
}

/// Writes all of `bytes` to stdout. A closed pipe (`| head`) ends the command quietly with
/// status 0; another error ends it with status 1.
fn write_stdout(out: &mut impl Write, bytes: &[u8]) -> Result<(), ExitCode> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => Err(failure(format!("cannot write to stdout: {e}"))),
    }
}

fn status(mountpoint: &Path, json: bool, watch: bool) -> ExitCode {
    let terminal = io::stdout().is_terminal();
    let mut out = io::stdout().lock();
    let mut first = true;
    loop {
        let s = match control::collect(mountpoint) {
            Ok(s) => s,
            Err(e) => return failure(e),
        };
        let mut text = String::new();
        if watch && terminal {
            text.push_str("\x1b[H\x1b[2J");
        } else if watch && !json && !first {
            text.push('\n');
        }
        text.push_str(&if json {
            control::render_json(&s)
        } else {
            control::render_table(&s)
        });
        if let Err(code) = write_stdout(&mut out, text.as_bytes()) {
            return code;
        }
        if !watch {
            return ExitCode::SUCCESS;
        }
        first = false;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Text as roff body lines: backslashes and hyphens escaped, no line taken for a request.
fn roff_text(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let l = line.replace('\\', "\\e").replace('-', "\\-");
        if l.trim().is_empty() {
            out.push_str(".PP\n");
            continue;
        }
        if l.starts_with('.') || l.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The COMMANDS section: each visible subcommand's usage, description and options, from its
/// clap definition (clap_mangen would point to separate pages for them).
fn roff_commands(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push_str(&format!(".SS {}\n", sub.get_name()));
        if let Some(usage) = sub.get_overridden_usage() {
            out.push_str(".B\n");
            out.push_str(&roff_text(&usage.to_string()));
        }
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.push_str(".PP\n");
            out.push_str(&roff_text(&about.to_string()));
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            let header = match (arg.is_positional(), arg.get_long()) {
                (true, _) | (false, None) => format!("\\fI{value}\\fR"),
                (false, Some(long)) if arg.get_action().takes_values() => {
                    format!("\\fB\\-\\-{}\\fR \\fI{value}\\fR", long.replace('-', "\\-"))
                }
                (false, Some(long)) => format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-")),
            };
            out.push_str(&format!(".TP\n{header}\n"));
            let mut help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            if let Some(d) = arg.get_default_values().first() {
                help.push_str(&format!(" [default: {}]", d.to_string_lossy()));
            }
            out.push_str(&roff_text(&help));
        }
    }
    out
}

/// The man page: one page for the whole command, made from the clap definition.
fn man_page() -> io::Result<Vec<u8>> {
    let cmd = command().disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    buf.extend_from_slice(roff_commands(&cmd).as_bytes());
    man.render_extra_section(&mut buf)?;
    man.render_version_section(&mut buf)?;
    Ok(buf)
}

fn generate(what: Generate) -> ExitCode {
    let buf = match what {
        Generate::Man => match man_page() {
            Ok(buf) => buf,
            Err(e) => return failure(format!("man page: {e}")),
        },
        Generate::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut command(), "streamfs", &mut buf);
            buf
        }
    };
    match write_stdout(&mut io::stdout().lock(), &buf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// The mount settings of -o options and the flags over them.
fn mount_settings(
    options: &[String],
    channel_buffer_size: Option<&str>,
    ring_buffer_size: Option<&str>,
    http: &streamfs::http::config::HttpArgs,
    // --backend and --nats-creds.
    nats: (Option<&str>, Option<&std::path::Path>),
) -> Result<MountSettings, String> {
    let mut mount = MountSettings::default();
    for o in options {
        mount.apply_options(o).map_err(|e| e.to_string())?;
    }
    let flag_err =
        |flag: &str, e: OptionError| format!("invalid {flag} '{}': {}", e.value, e.reason);
    if let Some(v) = channel_buffer_size {
        mount.budgets.channel =
            parse_channel_size(v).map_err(|e| flag_err("--channel-buffer-size", e))?;
    }
    if let Some(v) = ring_buffer_size {
        mount.budgets.ring = parse_ring_size(v).map_err(|e| flag_err("--ring-buffer-size", e))?;
    }
    if let Some(v) = nats.0 {
        mount.nats.urls =
            streamfs::nats::settings::parse_backend(v).map_err(|e| flag_err("--backend", e))?;
    }
    if let Some(f) = nats.1 {
        mount.nats.creds = Some(f.to_path_buf());
    }
    mount.nats.check(&mount.policy).map_err(|e| e.to_string())?;
    http.apply(&mut mount)?;
    mount.http.check()?;
    Ok(mount)
}

fn settings(cli: Cli) -> Result<DaemonSettings, SetupError> {
    let mut mount = mount_settings(
        &cli.options,
        cli.channel_buffer_size.as_deref(),
        cli.ring_buffer_size.as_deref(),
        &cli.http,
        (cli.backend.as_deref(), cli.nats_creds.as_deref()),
    )?;
    let (source, mountpoint) = match cli.paths.as_slice() {
        [mp] => (None, mp.clone()),
        [src, mp] => (Some(src.clone()), mp.clone()),
        _ => unreachable!("clap takes one or two paths"),
    };
    if let Some(src) = source
        && mount.fsname == "streamfs"
    {
        mount.fsname = src.to_string_lossy().into_owned();
    }
    let invalid = |e: io::Error| {
        if control::is_dead_mount_error(&e) {
            SetupError::Refused(control::dead_mount_message(&mountpoint))
        } else {
            SetupError::Usage(format!("invalid mountpoint '{}': {e}", show(&mountpoint)))
        }
    };
    let meta = std::fs::metadata(&mountpoint).map_err(invalid)?;
    if !meta.is_dir() {
        return Err(SetupError::Usage(format!(
            "invalid mountpoint '{}': not a directory",
            show(&mountpoint)
        )));
    }
    let mountpoint = mountpoint.canonicalize().map_err(invalid)?;
    Ok(DaemonSettings {
        mountpoint: Some(mountpoint),
        mount,
        foreground: cli.foreground,
        debug: cli.debug,
        log_file: cli.log_file,
    })
}

/// The help after the options: AFTER_HELP with this machine's default `max_memory`.
fn after_help() -> String {
    AFTER_HELP.replace(
        "{MAX_MEMORY}",
        &streamfs::size::HumanSize(streamfs::options::default_max_memory()).to_string(),
    )
}

/// The command line's definition, as parsed and as documented (man page, completions).
fn command() -> clap::Command {
    Cli::command().after_help(after_help())
}

/// Binds the gateway (its address and tokens are checked before anything is mounted or
/// forked), then runs the daemon.
fn start(s: DaemonSettings) -> ExitCode {
    // Options are good: run again with the allocator's thread caches off (returns at once
    // when they are off already).
    streamfs::allocator::exec_tuned();
    let gateway = match streamfs::http::Gateway::bind(&s.mount) {
        Ok(g) => g,
        Err(streamfs::http::BindError::Usage(e)) => return usage_error(e),
        Err(streamfs::http::BindError::Failed(e)) => return failure(e),
    };
    match daemon::run(s, gateway) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(e),
    }
}

fn main() -> ExitCode {
    streamfs::allocator::restore_environment();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Some(Command::Stop {
            mountpoint,
            timeout,
        }) => match control::stop(&mountpoint, Duration::from_secs(timeout)) {
            Ok(done) => {
                match write_stdout(&mut io::stdout(), format!("streamfs: {done}\n").as_bytes()) {
                    Ok(()) | Err(_) => ExitCode::SUCCESS,
                }
            }
            Err(e) => failure(e),
        },
        Some(Command::Status {
            mountpoint,
            json,
            watch,
        }) => status(&mountpoint, json, watch),
        Some(Command::Generate { what }) => generate(what),
        Some(Command::Serve {
            options,
            channel_buffer_size,
            ring_buffer_size,
            debug,
            log_file,
            http,
        }) => {
            let mount = match mount_settings(
                &options,
                channel_buffer_size.as_deref(),
                ring_buffer_size.as_deref(),
                &http,
                (None, None),
            ) {
                Ok(m) => m,
                Err(e) => return usage_error(e),
            };
            if mount.http.addr.is_none() {
                return usage_error("serve needs an address to listen on: --http ADDR");
            }
            let s = DaemonSettings {
                mountpoint: None,
                mount,
                foreground: true,
                debug,
                log_file,
            };
            start(s)
        }
        None => {
            let s = match settings(cli) {
                Ok(s) => s,
                Err(SetupError::Usage(e)) => return usage_error(e),
                Err(SetupError::Refused(e)) => return failure(e),
            };
            let mp = s.mountpoint.clone().expect("a mount has a mount point");
            if daemon::is_mount_point(&mp) {
                return failure(daemon::StartError::AlreadyMounted(show(&mp)));
            }
            start(s)
        }
    }
}
