//! Video over the HTTP gateway: ffmpeg as the HTTP writer (its chunked POST), ffmpeg and the
//! mount as viewers decoding every frame, and recordings over HTTP and on the mount that are
//! byte-identical.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(30);

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// An ffmpeg command decoding `input` and reporting progress (`frame=N`) on stdout.
fn decoder(input: &str, err: &Path) -> String {
    format!(
        "ffmpeg -nostdin -hide_banner -nostats -loglevel error -progress pipe:1 -i {input} \
         -f null - 2>{}",
        q(err)
    )
}

/// The frames a viewer decoded, once it ended; it must exit 0 with a finished report.
fn frames(p: &mut Proc, err: &Path) -> u64 {
    let out = String::from_utf8_lossy(p.read_to_eof(HANG)).into_owned();
    let status = p.wait(HANG);
    let errors = std::fs::read_to_string(err).unwrap_or_default();
    assert!(status.success(), "viewer exited with {status}: {errors}");
    assert!(out.contains("progress=end"), "viewer did not finish: {out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .next_back()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {out:?}"))
}

/// Frames ffprobe decodes in a file.
fn count_frames(file: &Path) -> u64 {
    let (code, out, err) = sh(&format!(
        "ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
         -of csv=p=0 {}",
        q(file)
    ));
    assert_eq!(code, 0, "ffprobe: {err}");
    out.split_whitespace()
        .next()
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("ffprobe said {out:?}"))
}

#[test]
fn ffmpeg_posts_over_http_and_viewers_on_both_sides_decode_every_frame() {
    let m = Mount::new(&[
        "--http",
        "127.0.0.1:0",
        "-o",
        "on_writer_close=eof,channel_buffer_size=16MB",
    ]);
    let port = m.http_port();
    let dir = m.dir.path();
    let clip = dir.join("clip.ts");
    let (code, _, err) = sh(&format!(
        "ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=320x240:rate=25 -t 3 \
         -c:v mpeg2video -g 10 -f mpegts -y {}",
        q(&clip)
    ));
    assert_eq!(code, 0, "{err}");
    let want = count_frames(&clip);
    assert_eq!(want, 75);

    let cam = m.file("cam1");
    std::fs::write(&cam, b"").unwrap();
    let url = format!("http://127.0.0.1:{port}/streams/cam1");
    let (http_err, pipe_err) = (dir.join("http.err"), dir.join("pipe.err"));
    let mut http_viewer = Proc::sh(&format!("exec {}", decoder(&url, &http_err)));
    let mut pipe_viewer = Proc::sh(&format!("cat {} | {}", q(&cam), decoder("-", &pipe_err)));
    let (rec_http, rec_mount) = (dir.join("rec-http.ts"), dir.join("rec-mount.ts"));
    let mut curl = Proc::sh(&format!("exec curl -sN -o {} {url}", q(&rec_http)));
    let mut cat = Proc::sh(&format!("exec cat {} > {}", q(&cam), q(&rec_mount)));
    wait_readers(&cam, 4);

    // ffmpeg's HTTP output is a chunked POST; -re paces it as a live source.
    let (code, _, err) = sh(&format!(
        "ffmpeg -nostdin -loglevel error -re -i {} -c copy -f mpegts {url}",
        q(&clip)
    ));
    assert_eq!(code, 0, "the HTTP writer: {err}");
    // Its POST ended: the last writer closed, so every reader ends (on_writer_close=eof).
    assert_eq!(frames(&mut http_viewer, &http_err), want, "the HTTP viewer");
    assert_eq!(
        frames(&mut pipe_viewer, &pipe_err),
        want,
        "the mount viewer"
    );
    assert!(curl.wait(HANG).success());
    assert!(cat.wait(HANG).success());
    let (a, b) = (
        std::fs::read(&rec_http).unwrap(),
        std::fs::read(&rec_mount).unwrap(),
    );
    assert!(!a.is_empty() && a.len() % 188 == 0, "{} bytes", a.len());
    assert!(
        a == b,
        "the recordings differ: {} and {} bytes",
        a.len(),
        b.len()
    );
    assert_eq!(count_frames(&rec_http), want);
}
