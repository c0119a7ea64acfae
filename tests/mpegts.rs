//! `streamfs::mpegts::TsScanner`: random access points in MPEG-TS, found write by write.
//!
//! Synthetic streams built here (PAT, PMT, video with RAI, audio with RAI, null packets) give
//! the same points however they are split into writes; real ffmpeg output gives one point per
//! GOP, and a cut there decodes without an error while a cut elsewhere does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use streamfs::mpegts::{TsScanner, Verdict};
use streamfs::stream::{Align, Budgets, Meta, Origin, Pool, Start, Stream};

const P: usize = 188;
const VIDEO: u16 = 0x100;
const AUDIO: u16 = 0x101;
const PMT: u16 = 0x1000;

// ---------------------------------------------------------------------------------------
// Building packets

fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A packet whose payload (at most 182 bytes) follows an adaptation field of stuffing, whose
/// flags byte carries RAI when asked.
fn packet(pid: u16, pusi: bool, rai: bool, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 182);
    let mut p = vec![
        0x47,
        (pid >> 8) as u8 | if pusi { 0x40 } else { 0 },
        pid as u8,
        0x30,
    ];
    let af_len = 183 - payload.len();
    p.push(af_len as u8);
    p.push(if rai { 0x40 } else { 0 });
    p.resize(5 + af_len, 0xff);
    p.extend_from_slice(payload);
    assert_eq!(p.len(), P);
    p
}

/// A PSI payload: pointer_field, then a section of `table_id` with table_id_extension `ext`,
/// version 0, section 0 of 0, `rest`, and the CRC.
fn section(table_id: u8, ext: u16, rest: &[u8]) -> Vec<u8> {
    let len = 5 + rest.len() + 4;
    let mut s = vec![table_id, 0xb0 | (len >> 8) as u8, len as u8];
    s.extend_from_slice(&ext.to_be_bytes());
    s.extend_from_slice(&[0xc1, 0, 0]);
    s.extend_from_slice(rest);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    let mut payload = vec![0];
    payload.extend(s);
    payload
}

fn pat() -> Vec<u8> {
    packet(
        0,
        true,
        false,
        &section(0, 1, &[0, 1, 0xe0 | (PMT >> 8) as u8, PMT as u8]),
    )
}

fn pmt(streams: &[(u8, u16)]) -> Vec<u8> {
    let mut rest = vec![0xe0 | (VIDEO >> 8) as u8, VIDEO as u8, 0xf0, 0];
    for &(stream_type, pid) in streams {
        rest.extend_from_slice(&[stream_type, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0]);
    }
    packet(PMT, true, false, &section(2, 1, &rest))
}

fn av_pmt() -> Vec<u8> {
    pmt(&[(0x1b, VIDEO), (0x0f, AUDIO)])
}

fn pes(stream_id: u8, es: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
    p.extend_from_slice(es);
    p
}

/// A video PES start: an IDR access unit with RAI, or a P frame without.
fn video(key: bool) -> Vec<u8> {
    let es: &[u8] = if key {
        &[0, 0, 0, 1, 9, 0x10, 0, 0, 0, 1, 0x67, 0x64, 0, 0x0d]
    } else {
        &[0, 0, 0, 1, 9, 0x30, 0, 0, 0, 1, 0x41, 0x9a]
    };
    packet(VIDEO, true, key, &pes(0xe0, es))
}

fn video_more() -> Vec<u8> {
    packet(VIDEO, false, false, &[0x55; 100])
}

fn audio(rai: bool) -> Vec<u8> {
    packet(AUDIO, true, rai, &pes(0xc0, &[0xff, 0xf1, 0x50, 0x80]))
}

fn null() -> Vec<u8> {
    let mut p = vec![0x47, 0x1f, 0xff, 0x10];
    p.resize(P, 0xff);
    p
}

/// A stream and the points expected in it.
fn synthetic() -> (Vec<u8>, Vec<u64>) {
    let mut ts = Vec::new();
    let mut expected = Vec::new();
    let put = |ts: &mut Vec<u8>, p: Vec<u8>| {
        ts.extend(p);
        (ts.len() - P) as u64
    };
    // What ffmpeg writes first: SDT, PAT, PMT, keyframe.
    put(&mut ts, packet(0x11, true, false, &[0, 0x42, 0xf0, 0]));
    let pat0 = put(&mut ts, pat());
    put(&mut ts, av_pmt());
    put(&mut ts, video(true));
    expected.push(pat0);
    for _ in 0..3 {
        put(&mut ts, video_more());
    }
    put(&mut ts, audio(true)); // RAI on audio: not a start when there is video
    put(&mut ts, null());
    put(&mut ts, video(false));
    put(&mut ts, audio(false));
    // PAT, PMT, audio, keyframe: within the window, start at the PAT.
    let pat1 = put(&mut ts, pat());
    put(&mut ts, av_pmt());
    put(&mut ts, audio(true));
    put(&mut ts, video(true));
    expected.push(pat1);
    put(&mut ts, video_more());
    // A keyframe with no PAT/PMT just before: start at the keyframe.
    for _ in 0..12 {
        put(&mut ts, null());
    }
    expected.push(put(&mut ts, video(true)));
    // PMT before PAT: the PAT is not followed by a PMT, so the keyframe.
    put(&mut ts, av_pmt());
    put(&mut ts, pat());
    expected.push(put(&mut ts, video(true)));
    // PAT and PMT too far before the keyframe.
    put(&mut ts, pat());
    put(&mut ts, av_pmt());
    for _ in 0..9 {
        put(&mut ts, audio(false));
    }
    expected.push(put(&mut ts, video(true)));
    // A video PES start without RAI, though its ES is an IDR: RAI was seen on this PID, so
    // only RAI counts.
    put(
        &mut ts,
        packet(VIDEO, true, false, &pes(0xe0, &[0, 0, 1, 0x65, 0x88])),
    );
    put(&mut ts, video_more());
    (ts, expected)
}

// ---------------------------------------------------------------------------------------
// Feeding

/// Scans `data` as writes ending at `cuts` (increasing, within the data), from `base`.
fn scan_split(base: u64, data: &[u8], cuts: &[usize]) -> (Vec<u64>, Verdict) {
    let mut s = TsScanner::new();
    let mut found = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let got = s.scan(base + at as u64, &data[at..cut]);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "in increasing order: {got:?}"
        );
        if let (Some(&first), Some(&last)) = (got.first(), found.last()) {
            assert!(first > last, "each point reported once");
        }
        assert!(
            got.iter().all(|&o| o < base + cut as u64),
            "completed by this write"
        );
        found.extend(got);
        at = cut;
    }
    (found, s.verdict())
}

fn scan_chunks(data: &[u8], chunk: usize) -> (Vec<u64>, Verdict) {
    let cuts: Vec<usize> = (chunk..data.len()).step_by(chunk).collect();
    scan_split(0, data, &cuts)
}

/// Deterministic pseudo-random split points (xorshift), writes of 1 to `max` bytes.
fn random_cuts(len: usize, max: usize, mut seed: u64) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    loop {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        at += 1 + (seed % max as u64) as usize;
        if at >= len {
            return cuts;
        }
        cuts.push(at);
    }
}

fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Synthetic streams

#[test]
fn synthetic_points_whatever_the_split() {
    let (ts, expected) = synthetic();
    assert_eq!(
        scan_chunks(&ts, ts.len()),
        (expected.clone(), Verdict::MpegTs)
    );
    assert_eq!(scan_chunks(&ts, P), (expected.clone(), Verdict::MpegTs));
    assert_eq!(scan_chunks(&ts, 1), (expected.clone(), Verdict::MpegTs));
    assert_eq!(
        scan_chunks(&ts, 262_144 % P),
        (expected.clone(), Verdict::MpegTs)
    );
    for seed in 1..50 {
        let cuts = random_cuts(ts.len(), 700, seed);
        assert_eq!(
            scan_split(0, &ts, &cuts),
            (expected.clone(), Verdict::MpegTs),
            "{cuts:?}"
        );
    }
    // Offsets are absolute: a stream whose scanner starts at another offset.
    let moved: Vec<u64> = expected.iter().map(|o| o + 1_000_003).collect();
    assert_eq!(
        scan_split(1_000_003, &ts, &random_cuts(ts.len(), 300, 7)).0,
        moved
    );
}

/// A stream of the core holding `ts` in writes cut at `cuts`, with `replay_align=mpegts`
/// set before the writes or only after them.
fn core_stream(ts: &[u8], cuts: &[usize], aligned_first: bool) -> std::sync::Arc<Stream> {
    let s = Stream::new(
        1,
        Budgets::new(1 << 20, 1 << 20),
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            crtime: std::time::SystemTime::UNIX_EPOCH,
            ctime: std::time::SystemTime::UNIX_EPOCH,
        },
        Pool::unlimited(),
    );
    let align = |s: &Stream| s.update_policy(|p| p.align = Align::MpegTs);
    if aligned_first {
        align(&s);
    }
    let w = s.open_writer();
    let mut at = 0;
    for &cut in cuts.iter().chain([&ts.len()]) {
        w.submit(&ts[at..cut], 0, Box::new(|r| r.expect("written")));
        at = cut;
    }
    if !aligned_first {
        align(&s);
    }
    s
}

#[test]
fn turning_mpegts_on_finds_the_points_of_the_history_written_before() {
    let (ts, expected) = synthetic();
    let cuts = random_cuts(ts.len(), 700, 3);
    for aligned_first in [true, false] {
        let s = core_stream(&ts, &cuts, aligned_first);
        for (from, want) in [
            (Origin::Start, expected[0]),
            (Origin::Live, *expected.last().unwrap()),
        ] {
            let start = Start {
                from,
                snapshot: true,
            };
            assert_eq!(
                s.resolve(start).unwrap(),
                (want, ts.len() as u64),
                "{from:?}, aligned before the writes: {aligned_first}"
            );
        }
    }
}

proptest! {
    #[test]
    fn synthetic_points_at_any_split(mut cuts in proptest::collection::vec(0usize..20_000, 0..40)) {
        let (ts, expected) = synthetic();
        cuts.iter_mut().for_each(|c| *c %= ts.len());
        cuts.sort_unstable();
        cuts.dedup();
        cuts.retain(|&c| c > 0);
        prop_assert_eq!(scan_split(0, &ts, &cuts), (expected, Verdict::MpegTs));
    }
}

#[test]
fn verdict_waits_for_four_packets() {
    let (ts, expected) = synthetic();
    let mut s = TsScanner::new();
    // The first keyframe is the 4th packet: it is reported when sync is established.
    assert!(s.scan(0, &ts[..3 * P + 100]).is_empty());
    assert_eq!(s.verdict(), Verdict::Unknown);
    assert_eq!(
        s.scan(3 * P as u64 + 100, &ts[3 * P + 100..4 * P]),
        vec![expected[0]]
    );
    assert_eq!(s.verdict(), Verdict::MpegTs);
}

#[test]
fn a_stream_starting_mid_packet_is_hunted() {
    let (ts, expected) = synthetic();
    // Starting 50 bytes in: the first packets are skipped until sync is found.
    for cuts in [vec![], random_cuts(ts.len() - 50, 100, 3)] {
        let (found, verdict) = scan_split(50, &ts[50..], &cuts);
        assert_eq!(verdict, Verdict::MpegTs);
        assert_eq!(found, expected[1..]);
    }
}

#[test]
fn sync_lost_and_found_again() {
    let (ts, expected) = synthetic();
    // A broken writer's 77 stray bytes, then the stream from its start again.
    let mut broken = ts.clone();
    broken.extend_from_slice(&[0x13; 77]);
    broken.extend_from_slice(&ts);
    let second = (ts.len() + 77) as u64;
    for cuts in [
        vec![],
        random_cuts(broken.len(), 400, 11),
        (1..broken.len()).collect(),
    ] {
        let (found, verdict) = scan_split(0, &broken, &cuts);
        assert_eq!(verdict, Verdict::MpegTs);
        // Before the break all points. After it, hunting skips the first 3 packets and locks
        // at the 4th, the keyframe: its PAT and PMT were skipped, so it starts at itself.
        let mut want = expected.clone();
        want.push(second + 3 * P as u64);
        want.extend(expected[1..].iter().map(|o| o + second));
        assert_eq!(found, want);
    }
}

#[test]
fn repeated_loss_of_sync_gives_up() {
    let (ts, _) = synthetic();
    let mut s = TsScanner::new();
    let mut at = 0u64;
    let mut losses = 0;
    while s.verdict() != Verdict::NotMpegTs {
        s.scan(at, &ts[..20 * P]);
        at += 20 * P as u64;
        s.scan(at, &[0; 100]);
        at += 100;
        losses += 1;
        assert!(losses < 10, "never gave up");
    }
    assert_eq!(losses, 4);
    assert!(s.scan(at, &ts).is_empty());
}

#[test]
fn a_gap_in_offsets_resyncs() {
    let (ts, expected) = synthetic();
    let mut s = TsScanner::new();
    let mut found = s.scan(0, &ts[..100]);
    // The call after skips 5000 bytes: its packet boundary is hunted for again. The first
    // boundary after 5100 is packet 28; sync is found at packet 31 (a keyframe, as it happens).
    found.extend(s.scan(5100, &ts[5100..]));
    assert_eq!(s.verdict(), Verdict::MpegTs);
    let relock = 31 * P as u64;
    assert!(expected.contains(&relock));
    let want: Vec<u64> = expected.into_iter().filter(|&o| o >= relock).collect();
    assert_eq!(found, want);
}

#[test]
fn audio_only_every_pes_start() {
    let mut ts = Vec::new();
    let mut expected = Vec::new();
    for group in 0..5 {
        let pat_at = ts.len() as u64;
        ts.extend(pat());
        ts.extend(pmt(&[(0x0f, AUDIO)]));
        expected.push(pat_at);
        ts.extend(audio(group % 2 == 0));
        ts.extend(packet(AUDIO, false, false, &[0x11; 150]));
        for _ in 0..10 {
            ts.extend(packet(AUDIO, false, false, &[0x11; 150]));
        }
        expected.push(ts.len() as u64);
        ts.extend(audio(false));
        ts.extend(null());
    }
    assert_eq!(scan_chunks(&ts, 1), (expected.clone(), Verdict::MpegTs));
    assert_eq!(scan_chunks(&ts, ts.len()), (expected, Verdict::MpegTs));
}

#[test]
fn without_pmt_the_video_stream_id_decides() {
    let mut ts = Vec::new();
    for _ in 0..4 {
        ts.extend(null());
    }
    ts.extend(audio(true));
    let key = ts.len() as u64;
    ts.extend(video(true));
    ts.extend(video(false));
    assert_eq!(scan_chunks(&ts, 7), (vec![key], Verdict::MpegTs));
}

#[test]
fn without_rai_the_elementary_stream_decides() {
    let mut ts = Vec::new();
    ts.extend(pat());
    ts.extend(av_pmt());
    let mut expected = Vec::new();
    for i in 0..6 {
        let idr = i % 3 == 0;
        let es: &[u8] = if idr {
            &[0, 0, 0, 1, 0x67, 0x64]
        } else {
            &[0, 0, 0, 1, 0x41, 0x9a]
        };
        if idr {
            // The first one is just after the PAT and PMT.
            expected.push(if i == 0 { 0 } else { ts.len() as u64 });
        }
        ts.extend(packet(VIDEO, true, false, &pes(0xe0, es)));
        ts.extend(audio(true));
    }
    assert_eq!(scan_chunks(&ts, 1000), (expected, Verdict::MpegTs));
}

#[test]
fn not_mpegts() {
    let random = random_bytes(1 << 20, 42);
    let text = "The quick brown fox jumps over the lazy dog. GGGG\n".repeat(20_000);
    let mut almost = Vec::new();
    for _ in 0..100 {
        almost.extend(null());
        almost.extend_from_slice(&[0x47; 20]); // sync bytes at the wrong spacing
    }
    for data in [&random[..], text.as_bytes(), &almost[..]] {
        for chunk in [data.len(), 262_144, 4096, 188, 1] {
            let (found, verdict) = scan_chunks(data, chunk);
            assert!(found.is_empty());
            assert_eq!(verdict, Verdict::NotMpegTs, "chunk {chunk}");
        }
    }
    // A stream starting with a sync byte by chance.
    let mut g = random_bytes(100_000, 9);
    g[0] = 0x47;
    assert_eq!(scan_chunks(&g, 1000), (vec![], Verdict::NotMpegTs));
}

// ---------------------------------------------------------------------------------------
// Real ffmpeg output

/// Fails the test, loudly, when ffmpeg is missing (the test command installs it): a test
/// that cannot run must not pass.
fn require_ffmpeg() {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "ffmpeg is missing: install it (scripts/test does)");
}

fn ffmpeg_encode(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error"])
        .args(args)
        .args(["-f", "mpegts", "-y"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// What `ffmpeg -v error` prints decoding `data[at..]`.
fn decode_errors(dir: &Path, data: &[u8], at: u64) -> String {
    let cut: PathBuf = dir.join(format!("cut-{at}.ts"));
    std::fs::write(&cut, &data[at as usize..]).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&cut)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pid_at(data: &[u8], at: u64) -> u16 {
    let p = &data[at as usize..];
    assert_eq!(p[0], 0x47);
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// Points found feeding the file as ffmpeg writes a regular file (256 KiB blocks), as
/// per-packet writes, byte by byte and at random; all must agree.
fn points(data: &[u8]) -> Vec<u64> {
    let (found, verdict) = scan_chunks(data, 262_144);
    assert_eq!(verdict, Verdict::MpegTs);
    assert_eq!(scan_chunks(data, P).0, found);
    assert_eq!(scan_chunks(data, 1).0, found);
    for seed in 1..4 {
        assert_eq!(
            scan_split(0, data, &random_cuts(data.len(), 20_000, seed)).0,
            found
        );
    }
    found
}

#[test]
fn ffmpeg_h264_aac_one_point_per_gop() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let ts = ffmpeg_encode(
        dir.path(),
        "av.ts",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
        ],
    );
    assert_eq!(ts.len() % P, 0);
    let found = points(&ts);
    assert_eq!(found.len(), 4, "{found:?}");
    // ffmpeg starts with SDT, PAT, PMT, keyframe.
    assert_eq!(found[0], P as u64);
    for &at in &found {
        assert_eq!(at % P as u64, 0);
        assert_eq!(pid_at(&ts, at), 0, "a PAT at {at}");
        let errors = decode_errors(dir.path(), &ts, at);
        assert!(errors.is_empty(), "cut at {at}: {errors}");
    }
    // Between two keyframes, a cut on a packet boundary makes the decoder complain.
    let middle = (found[1] + found[2]) / 2 / P as u64 * P as u64;
    let errors = decode_errors(dir.path(), &ts, middle);
    assert!(!errors.is_empty(), "cut at {middle} decoded cleanly");
}

#[test]
fn ffmpeg_audio_only() {
    require_ffmpeg();
    let dir = tempfile::tempdir().unwrap();
    let ts = ffmpeg_encode(
        dir.path(),
        "a.ts",
        &[
            "-f", "lavfi", "-i", "testsrc", "-f", "lavfi", "-i", "sine", "-t", "4", "-vn", "-c:a",
            "aac",
        ],
    );
    let found = points(&ts);
    // Every audio PES start (ffmpeg packs several AAC frames in one).
    let pes_starts = ts
        .chunks(P)
        .filter(|p| p[1] & 0x40 != 0 && pid_of(p) == 0x100)
        .count();
    assert_eq!(found.len(), pes_starts);
    assert!(found.len() >= 10, "{found:?}");
    for &at in [found[0], found[found.len() / 2], found[found.len() - 1]].iter() {
        let errors = decode_errors(dir.path(), &ts, at);
        assert!(errors.is_empty(), "cut at {at}: {errors}");
    }
}

fn pid_of(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}
