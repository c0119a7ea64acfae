//! Mounting like any Linux filesystem: mount -t fuse.streamfs, /etc/fstab, the daemon's
//! lifecycle, non-root users and permissions. Real mounts, real mount(8) and fusermount3.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(20);

/// Tests that change machine-wide state (/usr/local/bin/streamfs, /etc/fstab, /dev/fuse
/// mode, test users) take this lock.
static SYSTEM: Mutex<()> = Mutex::new(());

fn system_lock() -> MutexGuard<'static, ()> {
    SYSTEM.lock().unwrap_or_else(|e| e.into_inner())
}

/// Points /usr/local/bin/streamfs (where mount.fuse3 looks, with PATH
/// /usr/local/sbin:/usr/local/bin:...) at the binary under test, restoring what was there.
struct InstalledBinary {
    previous: Option<PathBuf>,
}

const INSTALLED: &str = "/usr/local/bin/streamfs";

impl InstalledBinary {
    fn new() -> InstalledBinary {
        let path = Path::new(INSTALLED);
        let previous = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Some(std::fs::read_link(path).unwrap()),
            Ok(_) => {
                // A real install: move it aside and put it back afterwards.
                let aside = PathBuf::from(format!("{INSTALLED}.before-tests"));
                std::fs::rename(path, &aside).unwrap();
                Some(aside)
            }
            Err(_) => None,
        };
        let _ = std::fs::remove_file(path);
        std::os::unix::fs::symlink(bin(), path).unwrap();
        InstalledBinary { previous }
    }
}

impl Drop for InstalledBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(INSTALLED);
        match &self.previous {
            Some(p) if p.to_string_lossy().ends_with(".before-tests") => {
                let _ = std::fs::rename(p, INSTALLED);
            }
            Some(target) => {
                let _ = std::os::unix::fs::symlink(target, INSTALLED);
            }
            None => {}
        }
    }
}

/// A mount made by mount(8) or streamfs itself, unmounted (by stop, then lazily) on drop.
struct External {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl External {
    fn dir() -> External {
        let (dir, path) = mount_dir("streamfs-life");
        External { dir, path }
    }
}

impl Drop for External {
    fn drop(&mut self) {
        if is_mounted(&self.path) {
            let _ = Command::new(bin()).arg("stop").arg(&self.path).output();
        }
        if is_mounted(&self.path) {
            let _ = streamfs::daemon::unmount(&self.path, true);
        }
    }
}

fn mount_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(1) == Some(&path.to_str().unwrap())).then(|| f[2].to_string())
    })
}

#[test]
fn mount_helper_accepts_generic_options() {
    let _lock = system_lock();
    let _bin = InstalledBinary::new();
    let m = External::dir();
    let out = Command::new("mount")
        .args(["-t", "fuse.streamfs", "streamfs"])
        .arg(&m.path)
        .args([
            "-o",
            "rw,nosuid,nodev,noatime,_netdev,nofail,default_permissions,channel_buffer_size=512KB,ring_buffer_size=1MB",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&m.path));
    assert_eq!(mount_type(&m.path).as_deref(), Some("fuse.streamfs"));
    assert_eq!(xattr_u64(&m.path, "channel_buffer_size"), 512 << 10);
    assert_eq!(xattr_u64(&m.path, "ring_buffer_size"), 1 << 20);
    let pid = xattr_u64(&m.path, "pid");
    let (code, _, err) = sh(&format!("umount '{}'", m.path.display()));
    assert_eq!(code, 0, "{err}");
    assert!(!is_mounted(&m.path));
    wait_for("the daemon to exit", HANG, || process_gone(pid));
}

/// Adds a line to /etc/fstab and removes it on drop.
struct FstabLine(String);

impl FstabLine {
    fn add(line: String) -> FstabLine {
        let mut tab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
        if !tab.is_empty() && !tab.ends_with('\n') {
            tab.push('\n');
        }
        tab.push_str(&line);
        tab.push('\n');
        std::fs::write("/etc/fstab", tab).unwrap();
        FstabLine(line)
    }
}

impl Drop for FstabLine {
    fn drop(&mut self) {
        let tab = std::fs::read_to_string("/etc/fstab").unwrap_or_default();
        let kept: String = tab
            .lines()
            .filter(|l| *l != self.0)
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write("/etc/fstab", kept);
    }
}

#[test]
fn fstab_line_mounts_and_umount_unmounts() {
    let _lock = system_lock();
    let _bin = InstalledBinary::new();
    let m = External::dir();
    let _line = FstabLine::add(format!(
        "streamfs {} fuse.streamfs noauto,nofail,channel_buffer_size=256KB,ring_buffer_size=0 0 0",
        m.path.display()
    ));
    let (code, _, err) = sh(&format!("mount '{}'", m.path.display()));
    assert_eq!(code, 0, "mount: {err}");
    assert!(is_mounted(&m.path));
    assert_eq!(xattr_u64(&m.path, "channel_buffer_size"), 256 << 10);
    assert_eq!(xattr_u64(&m.path, "ring_buffer_size"), 0);
    std::fs::write(m.path.join("x"), b"ok").unwrap();
    let (code, _, err) = sh(&format!("umount '{}'", m.path.display()));
    assert_eq!(code, 0, "umount: {err}");
    assert!(!is_mounted(&m.path));
}

#[test]
fn systemd_unit_verifies() {
    let _lock = system_lock();
    let _bin = InstalledBinary::new();
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/streamfs@.service");
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("streamfs@mnt-live.service");
    std::fs::copy(&unit, &instance).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&instance)
        .output()
        .expect("systemd-analyze is needed to verify the unit (Debian's systemd package)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("streamfs@"), "{err}");
}

#[test]
fn already_mounted_is_refused_with_one_line() {
    let m = Mount::new(&[]);
    let out = Command::new(bin()).arg(&m.path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already a mount point"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn umount_is_busy_while_a_stream_is_open_and_stop_ends_readers() {
    let m = External::dir();
    assert!(Command::new(bin()).arg(&m.path).status().unwrap().success());
    let s = m.path.join("cam");
    std::fs::write(&s, b"queued").unwrap();
    let mut r = Proc::cat(&s);
    assert_eq!(r.read_at_least(6, HANG), b"queued");
    let (code, _, err) = sh(&format!("umount '{}'", m.path.display()));
    assert_ne!(code, 0);
    assert!(err.contains("busy"), "{err}");
    assert!(is_mounted(&m.path));
    let pid = xattr_u64(&m.path, "pid");
    run_ok(Command::new(bin()).arg("stop").arg(&m.path));
    assert_eq!(r.read_to_eof(HANG), b"queued");
    assert!(r.wait(HANG).success());
    assert!(!is_mounted(&m.path));
    assert!(process_gone(pid));
}

#[test]
fn lazy_umount_detaches_and_the_daemon_exits_after_the_last_close() {
    let m = External::dir();
    assert!(Command::new(bin()).arg(&m.path).status().unwrap().success());
    let pid = xattr_u64(&m.path, "pid");
    let s = m.path.join("cam");
    std::fs::write(&s, b"").unwrap();
    let f = std::fs::OpenOptions::new().append(true).open(&s).unwrap();
    let (code, _, err) = sh(&format!("umount -l '{}'", m.path.display()));
    assert_eq!(code, 0, "{err}");
    assert!(!is_mounted(&m.path));
    // Still serving the open file.
    use std::io::Write;
    (&f).write_all(b"still here").unwrap();
    assert!(!process_gone(pid));
    drop(f);
    wait_for("the daemon to exit after the last close", HANG, || {
        process_gone(pid)
    });
}

#[test]
fn killed_daemon_leaves_errors_not_hangs_and_umount_clears_it() {
    let m = External::dir();
    assert!(Command::new(bin()).arg(&m.path).status().unwrap().success());
    let pid = xattr_u64(&m.path, "pid") as u32;
    let s = m.path.join("idle");
    std::fs::write(&s, b"").unwrap();
    let mut r = Proc::cat(&s);
    wait_readers(&s, 1);
    wait_parked(&s, r.child.id());
    kill(pid, libc::SIGKILL);
    let status = r.wait(HANG);
    assert!(!status.success(), "reader of a dead daemon succeeded");
    let e = std::fs::metadata(&s).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    let (code, _, err) = sh(&format!("umount '{}'", m.path.display()));
    assert_eq!(code, 0, "{err}");
    assert!(!is_mounted(&m.path));
}

#[test]
fn sigint_and_sighup_shut_down_like_sigterm() {
    for sig in [libc::SIGINT, libc::SIGHUP] {
        let mut m = Mount::new(&[]);
        let s = m.file("x");
        std::fs::write(&s, b"").unwrap();
        let mut r = Proc::cat(&s);
        wait_readers(&s, 1);
        let mut child = m.daemon.take().unwrap();
        kill(child.id(), sig);
        assert!(wait_child(&mut child, HANG).unwrap().success());
        assert!(r.read_to_eof(HANG).is_empty());
        assert!(!is_mounted(&m.path));
    }
}

#[test]
fn log_file_and_debug_flag() {
    let m = External::dir();
    let log = m.dir.path().join("streamfs.log");
    let ok = Command::new(bin())
        .arg(&m.path)
        .arg("-d")
        .arg("--log-file")
        .arg(&log)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::write(m.path.join("x"), b"1").unwrap();
    assert!(
        Command::new(bin())
            .arg("stop")
            .arg(&m.path)
            .status()
            .unwrap()
            .success()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("mounted"), "{text}");
    assert!(text.contains("write("), "debug lines missing: {text}");
}

#[test]
fn version_and_help() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("streamfs "));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "channel_buffer_size",
        "ring_buffer_size",
        "default 6MB",
        "--channel-buffer-size",
        "--ring-buffer-size",
        "--foreground",
        "--debug",
        "--log-file",
        "allow_other",
        "default_permissions",
        "uid=",
        "umask=",
        "KB, MB, GB",
        "stop",
        "status",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn a_user_mounts_and_default_permissions_protect_private_streams() {
    let _lock = system_lock();
    let (u1, _u2) = non_root_setup();
    let m = External::dir();
    std::os::unix::fs::chown(&m.path, Some(u1), None).unwrap();
    std::os::unix::fs::chown(m.dir.path(), Some(u1), None).unwrap();
    let mp = m.path.display().to_string();
    let (code, _, err) = as_user(
        "streamfs-t1",
        &format!("{} '{mp}' -o allow_other,default_permissions", bin()),
    );
    assert_eq!(code, 0, "user mount: {err}");
    assert_eq!(mount_type(&m.path).as_deref(), Some("fuse.streamfs"));
    let (code, _, err) = as_user(
        "streamfs-t1",
        &format!(
            "umask 077; echo secret > '{mp}/private'; echo hi > '{mp}/shared'; chmod 644 '{mp}/shared'"
        ),
    );
    assert_eq!(code, 0, "{err}");
    let meta = std::fs::metadata(m.path.join("private")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (u1, 0o600));
    let (code, _, err) = as_user("streamfs-t2", &format!("cat '{mp}/private'"));
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    let (code, _, err) = as_user("streamfs-t2", &format!("echo x >> '{mp}/shared'"));
    assert_ne!(code, 0, "another user wrote to a 0644 stream");
    assert!(err.contains("Permission denied"), "{err}");
    let (code, out, err) = as_user("streamfs-t2", &format!("head -c 3 '{mp}/shared'"));
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    let (code, _, err) = as_user("streamfs-t1", &format!("{} stop '{mp}'", bin()));
    assert_eq!(code, 0, "{err}");
    assert!(!is_mounted(&m.path));
}

#[test]
fn without_allow_other_other_users_are_kept_out() {
    let _lock = system_lock();
    let (u1, _) = non_root_setup();
    let m = External::dir();
    std::os::unix::fs::chown(&m.path, Some(u1), None).unwrap();
    std::os::unix::fs::chown(m.dir.path(), Some(u1), None).unwrap();
    let mp = m.path.display().to_string();
    let (code, _, err) = as_user("streamfs-t1", &format!("{} '{mp}'", bin()));
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = as_user("streamfs-t2", &format!("ls '{mp}'"));
    assert_ne!(code, 0);
    let (code, _, err) = as_user("streamfs-t1", &format!("echo a > '{mp}/a' && ls '{mp}'"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn uid_gid_umask_options_set_owner_and_mode_of_new_streams() {
    let _lock = system_lock();
    let (u1, u2) = non_root_setup();
    let m = Mount::new(&["-o", &format!("uid={u1},gid={u2},umask=027")]);
    let s = m.file("x");
    std::fs::write(&s, b"").unwrap();
    let meta = std::fs::metadata(&s).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (u1, u2, 0o640)
    );
}

#[test]
fn a_user_without_access_to_the_mountpoint_gets_one_line() {
    let _lock = system_lock();
    non_root_setup();
    let m = External::dir();
    // Owned by root, mode 755: the user may not mount on it.
    let (code, _, err) = as_user("streamfs-t1", &format!("{} '{}'", bin(), m.path.display()));
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("streamfs: cannot mount"), "{err}");
    assert!(!is_mounted(&m.path));
}

/// The daemon runs with glibc's per-thread caches off (it runs itself again with
/// `GLIBC_TUNABLES` saying so, same pid), unless the user's `GLIBC_TUNABLES` sets them.
/// `/proc/PID/environ` shows the environment its image was started with.
#[test]
fn the_daemon_runs_with_the_allocators_thread_caches_off_unless_told_otherwise() {
    require_fuse();
    let cases: &[(Option<&str>, &str, bool)] = &[
        (None, "GLIBC_TUNABLES=glibc.malloc.tcache_count=0", true),
        (
            Some("glibc.malloc.tcache_count=5"),
            "GLIBC_TUNABLES=glibc.malloc.tcache_count=5",
            false,
        ),
    ];
    for &(given, want, ran_again) in cases {
        let (dir, path) = mount_dir("streamfs-tunables");
        let mut cmd = Command::new(bin());
        cmd.arg(&path)
            .arg("-f")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap());
        match given {
            Some(v) => cmd.env("GLIBC_TUNABLES", v),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        let mut child = cmd.spawn().unwrap();
        wait_for("the mount", HANG, || is_mounted(&path));
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let vars: Vec<String> = environ
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        kill(child.id(), libc::SIGTERM);
        assert!(wait_child(&mut child, HANG).unwrap().success());
        assert!(vars.iter().any(|v| v == want), "{given:?}: {vars:?}");
        let saved = vars
            .iter()
            .any(|v| v.starts_with("STREAMFS_SAVED_GLIBC_TUNABLES="));
        assert_eq!(saved, ran_again, "{given:?}: {vars:?}");
    }
}
