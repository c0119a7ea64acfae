//! Latency probe of `scripts/bench`, built with `cargo build --release --example latency`;
//! not meant to be run by hand.
//!
//! A writer sends fixed-size messages on an absolute schedule (message i is due at start +
//! i × interval, so a late wake-up does not shift the ones after it). Each message carries its
//! sequence number and CLOCK_MONOTONIC in ns, taken just before it is written. A reader takes
//! the clock as soon as a read returns and records, for every message in what it got (one read
//! may return several), that time minus the send time.
//!
//! ```text
//! latency write COUNT WARMUP INTERVAL_US SIZE TARGET...
//! latency read  COUNT WARMUP SIZE OUT SOURCE
//! ```
//!
//! TARGET and SOURCE are paths, or `fd:N` for a descriptor inherited from the caller (pipes).
//! With several TARGETs each message goes into each in turn, as tee would, with one timestamp
//! taken before the first write. The first WARMUP messages are not recorded. A reader prints
//! `ready` on stdout once SOURCE is open, reads until it has seen the last message (or EOF),
//! then writes to OUT little-endian i64s: the number of messages it missed or saw out of
//! order, then the latency of each recorded message in ns.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::exit;

fn now_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn sleep_until(t_ns: i64) {
    let ts = libc::timespec {
        tv_sec: t_ns / 1_000_000_000,
        tv_nsec: t_ns % 1_000_000_000,
    };
    // SAFETY: ts is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
    // EINTR just ends the sleep early; the caller sends at once, which is only later.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

fn fail(msg: String) -> ! {
    eprintln!("latency: {msg}");
    exit(1)
}

fn num(s: &str, what: &str) -> i64 {
    s.parse()
        .unwrap_or_else(|_| fail(format!("{what}: not a number: {s:?}")))
}

fn open_end(spec: &str, write: bool) -> File {
    if let Some(fd) = spec.strip_prefix("fd:") {
        let fd = num(fd, "fd") as i32;
        // SAFETY: the caller passed us this descriptor to own.
        return unsafe { File::from_raw_fd(fd) };
    }
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open(spec)
        .unwrap_or_else(|e| fail(format!("{spec}: {e}")))
}

fn write(count: i64, warmup: i64, interval_us: i64, size: usize, targets: &[String]) {
    let mut files: Vec<File> = targets.iter().map(|t| open_end(t, true)).collect();
    let mut msg = vec![0u8; size];
    let start = now_ns() + 10_000_000; // every target is open; begin 10 ms from now
    for i in 0..warmup + count {
        sleep_until(start + i * interval_us * 1000);
        msg[..8].copy_from_slice(&i.to_le_bytes());
        msg[8..16].copy_from_slice(&now_ns().to_le_bytes());
        for f in &mut files {
            f.write_all(&msg)
                .unwrap_or_else(|e| fail(format!("write: {e}")));
        }
    }
}

fn read(count: i64, warmup: i64, size: usize, out: &str, source: &str) {
    let mut f = open_end(source, false);
    println!("ready");
    std::io::stdout().flush().ok();
    let last = warmup + count - 1;
    let mut lat: Vec<i64> = Vec::with_capacity(count.max(0) as usize);
    let mut buf = vec![0u8; 65536 + size];
    let mut have = 0usize; // bytes of an incomplete message kept at the front of buf
    let mut expect = 0i64;
    let mut bad = 0i64; // messages missed or out of order
    loop {
        let n = match f.read(&mut buf[have..have + 65536]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => fail(format!("read: {e}")),
        };
        let t = now_ns();
        have += n;
        let whole = have / size * size;
        let mut done = false;
        for m in buf[..whole].chunks_exact(size) {
            let seq = i64::from_le_bytes(m[..8].try_into().unwrap());
            let sent = i64::from_le_bytes(m[8..16].try_into().unwrap());
            if seq != expect {
                bad += (seq - expect).abs();
            }
            expect = seq + 1;
            if seq >= warmup {
                lat.push(t - sent);
            }
            done |= seq >= last;
        }
        buf.copy_within(whole..have, 0);
        have -= whole;
        if done {
            break;
        }
    }
    if expect <= last {
        bad += last + 1 - expect;
    }
    let mut bytes = Vec::with_capacity(8 * (lat.len() + 1));
    bytes.extend_from_slice(&bad.to_le_bytes());
    for v in &lat {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(out, bytes).unwrap_or_else(|e| fail(format!("{out}: {e}")));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size_ok = |s: i64| {
        if s < 16 {
            fail("SIZE must be at least 16".into())
        }
        s as usize
    };
    match args.first().map(String::as_str) {
        Some("write") if args.len() >= 6 => write(
            num(&args[1], "COUNT"),
            num(&args[2], "WARMUP"),
            num(&args[3], "INTERVAL_US"),
            size_ok(num(&args[4], "SIZE")),
            &args[5..],
        ),
        Some("read") if args.len() == 6 => read(
            num(&args[1], "COUNT"),
            num(&args[2], "WARMUP"),
            size_ok(num(&args[3], "SIZE")),
            &args[4],
            &args[5],
        ),
        _ => {
            eprintln!(
                "usage: latency write COUNT WARMUP INTERVAL_US SIZE TARGET...\n       \
                 latency read COUNT WARMUP SIZE OUT SOURCE"
            );
            exit(2)
        }
    }
}
