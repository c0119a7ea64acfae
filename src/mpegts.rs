//! Random access points in an MPEG transport stream, found write by write from packet
//! headers alone (no demuxer), for `replay_align=mpegts`: a late joiner starts at a video
//! keyframe, preceded by the stream's latest PAT and PMT when they come just before it, so
//! that a decoder starts cleanly.
//!
//! # What is parsed
//!
//! A TS is a sequence of 188-byte packets, each starting with the sync byte `0x47`. Per packet
//! only the 4-byte header and the adaptation field's flags are read, plus, on packets that
//! start a PES, its first 4 bytes (the ES bytes in that packet too, for video from encoders
//! that never set RAI). While sync is being hunted for, every byte is looked at, for at most
//! [`HUNT_LIMIT`] bytes per hunt. The PAT (PID 0) and the PMT of the first program it
//! lists are parsed (a few packets a second) to learn the video PID and, for audio-only
//! streams, the audio PID. Sections are parsed only when they fit in one packet and their
//! CRC is right, which is always so for the single-program streams encoders write.
//!
//! A random access point is:
//! - with a video stream: a PES start on the video PID whose packet has the
//!   random_access_indicator (RAI) set. Encoders that never set RAI on the video PID are
//!   served by a look at the elementary stream's first bytes (H.264 IDR or SPS, HEVC IRAP or
//!   VPS/SPS/PPS, MPEG-1/2 sequence header). RAI on other PIDs (ffmpeg sets it on some AAC
//!   PES) never counts. Before any PMT is seen, a PES start with RAI and a video stream_id
//!   (`0xE0..=0xEF`) counts and makes its PID the video PID until a PMT says otherwise;
//! - with a PMT that lists no video: every PES start on the first audio PID.
//!
//! The offset reported for it is the first byte of the latest PAT packet when that PAT, then
//! a PMT of the program, come within [`SI_WINDOW_PACKETS`] packets before the keyframe packet
//! (ffmpeg writes PAT and PMT immediately before every video keyframe), else the first byte
//! of the keyframe packet itself; a decoder then waits for the next PAT/PMT repetition. The
//! keyframe packet is used, too, when that PAT was already reported for an earlier keyframe
//! (two keyframes close together), so that every offset is reported once, in increasing
//! order.
//!
//! # Sync, lost sync, and the verdict
//!
//! - **At the start.** A writer normally starts at a packet boundary: if the first byte is
//!   `0x47` it is taken as a packet start, tentatively; once [`LOCK_PACKETS`] packets in a row
//!   start with `0x47` the stream is MPEG-TS ([`Verdict::MpegTs`]) and the random access
//!   points found meanwhile are reported. A stream that starts mid-packet, or whose tentative
//!   start fails, is hunted for sync as below.
//! - **Hunting.** Every byte's position modulo 188 has a counter of `0x47` bytes seen in a
//!   row at that phase; the first phase to reach [`LOCK_PACKETS`] gives the packet boundary
//!   and scanning resumes there (packets before it are skipped). A hunt that finds nothing in
//!   [`HUNT_LIMIT`] bytes gives up: [`Verdict::NotMpegTs`], for good.
//! - **Lost sync.** A packet that does not start with `0x47` starts a hunt at that byte.
//!   The PAT/PMT positions seen before it are forgotten (a joiner must not start across the
//!   break). The [`MAX_RECENT_LOSSES`]th loss without [`STABLE_PACKETS`] good packets between
//!   losses gives up as [`Verdict::NotMpegTs`].
//! - A call whose `offset` is not where the previous call ended also starts a hunt there (it
//!   is not counted as a loss).
//!
//! Once the verdict is `NotMpegTs`, [`TsScanner::scan`] returns at once and reports nothing;
//! the call that gives up reports nothing either.
//!
//! # Bounded state
//!
//! One partial packet (at most 187 bytes) is carried from one write to the next, plus a
//! 188-byte table of hunt counters, a few PIDs and offsets, and up to [`LOCK_PACKETS`] points
//! awaiting the verdict. Nothing grows with the stream.

#![forbid(unsafe_code)]

/// Bytes in a transport stream packet.
pub const PACKET_LEN: usize = 188;
/// The first byte of every packet.
pub const SYNC_BYTE: u8 = 0x47;
/// Packets in a row starting with the sync byte, 188 bytes apart, that establish sync.
pub const LOCK_PACKETS: u8 = 4;
/// Bytes a hunt for sync may search before the stream is declared not MPEG-TS.
pub const HUNT_LIMIT: u64 = 32 * PACKET_LEN as u64;
/// Losses of sync, each within [`STABLE_PACKETS`] packets of the previous one, that make the
/// stream not MPEG-TS.
pub const MAX_RECENT_LOSSES: u32 = 4;
/// Good packets in a row after which earlier losses of sync are forgotten.
pub const STABLE_PACKETS: u32 = 1024;
/// How many packets before a keyframe packet its PAT may be for a joiner to start at the PAT.
pub const SI_WINDOW_PACKETS: u64 = 8;

const PLEN: u64 = PACKET_LEN as u64;
const NULL_PID: u16 = 0x1fff;

/// Whether a stream parses as MPEG-TS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough bytes seen yet.
    Unknown,
    /// Sync established.
    MpegTs,
    /// The first bytes never synced, or sync was lost repeatedly; final.
    NotMpegTs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No byte seen yet.
    Start,
    /// At a packet boundary (or inside the carried partial packet).
    Locked,
    /// Looking for the packet boundary.
    Hunting,
    /// Not MPEG-TS; nothing more is scanned.
    GaveUp,
}

/// Scans an MPEG-TS byte stream write by write and reports where a decoder can start.
pub struct TsScanner {
    state: State,
    verdict: Verdict,
    /// Where the next call is expected to start.
    next_offset: u64,
    /// The partial packet carried over, and where it starts.
    part: [u8; PACKET_LEN],
    part_len: usize,
    part_start: u64,
    /// Hunt counters, indexed by absolute offset modulo 188, and where the hunt began.
    hunt: [u8; PACKET_LEN],
    hunt_from: u64,
    /// Whether sync is established (false only during the tentative start).
    confirmed: bool,
    /// Packets seen in the tentative start, and the points found meanwhile.
    tentative_packets: u8,
    pending: Vec<u64>,
    recent_losses: u32,
    good_run: u32,
    /// Offsets of the latest PAT and PMT packets since sync was last established.
    pat_at: Option<u64>,
    pmt_at: Option<u64>,
    /// The PID of the PMT of the PAT's first program.
    pmt_pid: Option<u16>,
    /// Whether that PMT has been parsed (then `video` and `audio` are what it lists).
    pmt_known: bool,
    /// The video PID and its stream_type (0 when guessed from a PES stream_id).
    video: Option<(u16, u8)>,
    audio_pid: Option<u16>,
    /// Whether RAI was ever seen on the video PID (if not, the ES bytes are looked at).
    video_rai_seen: bool,
    /// The latest point found: no offset is reported twice.
    last_point: Option<u64>,
}

impl Default for TsScanner {
    fn default() -> TsScanner {
        TsScanner::new()
    }
}

impl TsScanner {
    pub fn new() -> TsScanner {
        TsScanner {
            state: State::Start,
            verdict: Verdict::Unknown,
            next_offset: 0,
            part: [0; PACKET_LEN],
            part_len: 0,
            part_start: 0,
            hunt: [0; PACKET_LEN],
            hunt_from: 0,
            confirmed: false,
            tentative_packets: 0,
            pending: Vec::with_capacity(LOCK_PACKETS as usize),
            recent_losses: 0,
            good_run: 0,
            pat_at: None,
            pmt_at: None,
            pmt_pid: None,
            pmt_known: false,
            video: None,
            audio_pid: None,
            video_rai_seen: false,
            last_point: None,
        }
    }

    /// Whether the stream parses as MPEG-TS (see the module documentation).
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Scans the next write, whose first byte is at absolute stream offset `offset` (offsets
    /// only grow; consecutive calls cover consecutive bytes). Returns the absolute offsets of
    /// the random access points that this write completes, in increasing order: each is where
    /// a joiner should start, the first byte of the latest PAT packet when the PAT and a PMT
    /// come within a few packets before the keyframe packet, else the first byte of the
    /// keyframe packet itself. An offset may be before `offset` (the PAT, or the keyframe
    /// packet's first bytes, were in an earlier write).
    pub fn scan(&mut self, offset: u64, data: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        if self.state == State::GaveUp || data.is_empty() {
            return out;
        }
        match self.state {
            State::Start => {
                if data[0] == SYNC_BYTE {
                    self.state = State::Locked;
                } else {
                    self.start_hunt(offset);
                }
            }
            _ if offset != self.next_offset => {
                self.forget_position();
                self.start_hunt(offset);
            }
            _ => {}
        }
        self.next_offset = offset + data.len() as u64;

        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Locked if self.part_len > 0 => {
                    let take = (PACKET_LEN - self.part_len).min(data.len() - i);
                    self.part[self.part_len..self.part_len + take]
                        .copy_from_slice(&data[i..i + take]);
                    self.part_len += take;
                    i += take;
                    if self.part_len == PACKET_LEN {
                        self.part_len = 0;
                        let packet = self.part;
                        self.packet(&packet, self.part_start, &mut out);
                    }
                }
                State::Locked => {
                    let pos = offset + i as u64;
                    if data[i] != SYNC_BYTE {
                        if !self.lose_sync(pos) {
                            return Vec::new();
                        }
                    } else if data.len() - i >= PACKET_LEN {
                        self.packet(&data[i..i + PACKET_LEN], pos, &mut out);
                        i += PACKET_LEN;
                    } else {
                        let rest = data.len() - i;
                        self.part[..rest].copy_from_slice(&data[i..]);
                        self.part_len = rest;
                        self.part_start = pos;
                        i = data.len();
                    }
                }
                State::Hunting => match self.hunt_in(offset, data, i) {
                    Some(j) => i = j,
                    None => return Vec::new(),
                },
                State::Start | State::GaveUp => unreachable!("state handled before the loop"),
            }
        }
        out
    }

    /// Hunts from `data[i]` on. Returns where locked packets start again (or `data.len()`),
    /// or None when the hunt gives up.
    fn hunt_in(&mut self, offset: u64, data: &[u8], i: usize) -> Option<usize> {
        for (j, &b) in data.iter().enumerate().skip(i) {
            let pos = offset + j as u64;
            let phase = (pos % PLEN) as usize;
            if b == SYNC_BYTE {
                self.hunt[phase] += 1;
                if self.hunt[phase] >= LOCK_PACKETS {
                    self.state = State::Locked;
                    self.confirm(&mut Vec::new());
                    return Some(j);
                }
            } else {
                self.hunt[phase] = 0;
            }
            if pos - self.hunt_from >= HUNT_LIMIT {
                self.give_up();
                return None;
            }
        }
        Some(data.len())
    }

    fn start_hunt(&mut self, pos: u64) {
        self.state = State::Hunting;
        self.hunt = [0; PACKET_LEN];
        self.hunt_from = pos;
    }

    /// Forgets the partial packet and the positions of PAT and PMT, which a joiner must not
    /// be sent across a break in the packet sequence. The PIDs are kept: a PAT and PMT
    /// normally come again before the next keyframe and correct them.
    fn forget_position(&mut self) {
        self.part_len = 0;
        self.pat_at = None;
        self.pmt_at = None;
        self.pending.clear();
        self.tentative_packets = 0;
    }

    /// A packet boundary without a sync byte at `pos`. Returns false when giving up.
    fn lose_sync(&mut self, pos: u64) -> bool {
        self.forget_position();
        self.good_run = 0;
        self.recent_losses += 1;
        if self.recent_losses >= MAX_RECENT_LOSSES {
            self.give_up();
            return false;
        }
        self.start_hunt(pos);
        true
    }

    fn give_up(&mut self) {
        self.state = State::GaveUp;
        self.verdict = Verdict::NotMpegTs;
        self.forget_position();
    }

    fn confirm(&mut self, out: &mut Vec<u64>) {
        self.confirmed = true;
        self.verdict = Verdict::MpegTs;
        out.append(&mut self.pending);
    }

    /// One whole packet, starting with the sync byte, at absolute offset `pos`.
    fn packet(&mut self, p: &[u8], pos: u64, out: &mut Vec<u64>) {
        let point = self.examine(p, pos);
        self.good_run = self.good_run.saturating_add(1);
        if self.good_run >= STABLE_PACKETS {
            self.recent_losses = 0;
        }
        if self.confirmed {
            out.extend(point);
        } else {
            self.pending.extend(point);
            self.tentative_packets += 1;
            if self.tentative_packets >= LOCK_PACKETS {
                self.confirm(out);
            }
        }
    }

    /// Reads one packet's header; returns the random access point it completes, if any.
    fn examine(&mut self, p: &[u8], pos: u64) -> Option<u64> {
        let header = Header::parse(p)?;
        if header.pid == NULL_PID {
            return None;
        }
        let payload = header.payload(p);
        if header.pid == 0 {
            if header.pusi {
                self.pat(payload, pos);
            }
            return None;
        }
        if Some(header.pid) == self.pmt_pid {
            if header.pusi {
                self.pmt(payload, pos);
            }
            return None;
        }
        if !header.pusi || payload.len() < 4 || payload[..3] != [0, 0, 1] {
            return None;
        }
        let stream_id = payload[3];
        let key = match self.video {
            Some((pid, stream_type)) if pid == header.pid => {
                if header.rai {
                    self.video_rai_seen = true;
                    true
                } else {
                    !self.video_rai_seen && es_starts_cleanly(stream_type, pes_data(payload))
                }
            }
            Some(_) => false,
            None if self.pmt_known => self.audio_pid == Some(header.pid),
            None => {
                let video = header.rai && (0xe0..=0xef).contains(&stream_id);
                if video {
                    self.video = Some((header.pid, 0));
                    self.video_rai_seen = true;
                }
                video
            }
        };
        if !key {
            return None;
        }
        let after_last = |at: u64| self.last_point.is_none_or(|last| at > last);
        let point = match (self.pat_at, self.pmt_at) {
            (Some(pat), Some(pmt))
                if pat < pmt
                    && pmt < pos
                    && pos - pat <= SI_WINDOW_PACKETS * PLEN
                    && after_last(pat) =>
            {
                pat
            }
            _ => pos,
        };
        self.last_point = Some(point);
        Some(point)
    }

    fn pat(&mut self, payload: &[u8], pos: u64) {
        let Some(body) = section(payload, 0x00) else {
            return;
        };
        let first = body[5..]
            .chunks_exact(4)
            .find(|c| u16::from_be_bytes([c[0], c[1]]) != 0)
            .map(|c| pid_of(c[2], c[3]));
        let Some(pmt_pid) = first else {
            return;
        };
        if self.pmt_pid != Some(pmt_pid) {
            self.pmt_pid = Some(pmt_pid);
            self.pmt_known = false;
            self.pmt_at = None;
            self.video = None;
            self.audio_pid = None;
            self.video_rai_seen = false;
        }
        self.pat_at = Some(pos);
    }

    fn pmt(&mut self, payload: &[u8], pos: u64) {
        let Some(body) = section(payload, 0x02) else {
            return;
        };
        // body: 5 bytes of section header, PCR_PID (2), program_info_length (2), info, streams.
        if body.len() < 9 {
            return;
        }
        let info_len = (usize::from(body[7] & 0x0f) << 8) | usize::from(body[8]);
        let Some(mut streams) = body.get(9 + info_len..) else {
            return;
        };
        let (mut video, mut audio, mut private) = (None, None, None);
        while streams.len() >= 5 {
            let stream_type = streams[0];
            let pid = pid_of(streams[1], streams[2]);
            let es_info_len = (usize::from(streams[3] & 0x0f) << 8) | usize::from(streams[4]);
            if is_video_type(stream_type) {
                video = video.or(Some((pid, stream_type)));
            } else if is_audio_type(stream_type) {
                audio = audio.or(Some(pid));
            } else if stream_type == 0x06 {
                private = private.or(Some(pid));
            }
            streams = streams.get(5 + es_info_len..).unwrap_or(&[]);
        }
        if video.map(|v| v.0) != self.video.map(|v| v.0) {
            self.video_rai_seen = false;
        }
        self.video = video;
        self.audio_pid = audio.or(private);
        self.pmt_known = true;
        self.pmt_at = Some(pos);
    }
}

/// The fields of a packet header that matter here.
struct Header {
    pid: u16,
    pusi: bool,
    rai: bool,
    /// Where the payload starts (188 when there is none).
    payload_at: usize,
}

impl Header {
    /// None for packets with the transport error bit, a reserved adaptation_field_control or
    /// an impossible adaptation field length.
    fn parse(p: &[u8]) -> Option<Header> {
        if p[1] & 0x80 != 0 {
            return None;
        }
        let pid = pid_of(p[1], p[2]);
        let pusi = p[1] & 0x40 != 0;
        let afc = (p[3] >> 4) & 3;
        let (rai, payload_at) = match afc {
            1 => (false, 4),
            2 | 3 => {
                let af_len = usize::from(p[4]);
                if af_len > PACKET_LEN - 5 {
                    return None;
                }
                let rai = af_len > 0 && p[5] & 0x40 != 0;
                (rai, if afc == 2 { PACKET_LEN } else { 5 + af_len })
            }
            _ => return None,
        };
        Some(Header {
            pid,
            pusi,
            rai,
            payload_at,
        })
    }

    fn payload<'a>(&self, p: &'a [u8]) -> &'a [u8] {
        &p[self.payload_at..]
    }
}

fn pid_of(hi: u8, lo: u8) -> u16 {
    (u16::from(hi & 0x1f) << 8) | u16::from(lo)
}

/// The section with `table_id` starting in this payload (after its pointer_field), from
/// table_id_extension to before the CRC, when it fits in the payload, is current and its
/// CRC is right.
fn section(payload: &[u8], table_id: u8) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let sec = payload.get(1 + pointer..)?;
    if sec.len() < 3 || sec[0] != table_id || sec[1] & 0x80 == 0 {
        return None;
    }
    let section_len = (usize::from(sec[1] & 0x0f) << 8) | usize::from(sec[2]);
    // 5 bytes of extension/version/section numbers, then the CRC.
    if section_len < 9 {
        return None;
    }
    let whole = sec.get(..3 + section_len)?;
    if crc32_mpeg2(whole) != 0 || whole[5] & 0x01 == 0 {
        return None;
    }
    Some(&whole[3..whole.len() - 4])
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial all ones, no reflection, no final xor).
/// Over a whole section including its CRC it is zero.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
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

fn is_video_type(stream_type: u8) -> bool {
    // MPEG-1, MPEG-2, MPEG-4 part 2, H.264, HEVC, VVC, AVS2, Dirac, VC-1.
    matches!(
        stream_type,
        0x01 | 0x02 | 0x10 | 0x1b | 0x24 | 0x33 | 0xd2 | 0xd1 | 0xea
    )
}

fn is_audio_type(stream_type: u8) -> bool {
    // MPEG-1/2 audio, AAC (ADTS, LATM, raw), AC-3, DTS, TrueHD, E-AC-3 (ATSC types).
    // (0x86, between them, is SCTE-35 cue messages.)
    matches!(
        stream_type,
        0x03 | 0x04 | 0x0f | 0x11 | 0x1c | 0x81..=0x85 | 0x87
    )
}

/// The elementary stream bytes of a PES start (after the PES header), as far as they are in
/// this packet. Empty for stream_ids without the optional PES header.
fn pes_data(payload: &[u8]) -> &[u8] {
    match payload.get(8) {
        Some(&header_len) if payload[6] & 0xc0 == 0x80 => {
            payload.get(9 + usize::from(header_len)..).unwrap_or(&[])
        }
        _ => &[],
    }
}

/// Whether these first elementary stream bytes of a video access unit hold something a
/// decoder can start at: H.264 IDR or SPS, HEVC IRAP or parameter sets, MPEG-1/2 sequence
/// header. Only for encoders that do not set RAI.
fn es_starts_cleanly(stream_type: u8, es: &[u8]) -> bool {
    es.windows(4).any(|w| {
        w[..3] == [0, 0, 1]
            && match stream_type {
                0x1b => matches!(w[3] & 0x1f, 5 | 7),
                0x24 => matches!((w[3] >> 1) & 0x3f, 16..=21 | 32..=34),
                0x01 | 0x02 => w[3] == 0xb3,
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_pat_is_zero() {
        // The PAT ffmpeg writes for program 1 with its PMT on PID 0x1000.
        let pat = [
            0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1,
            0x04, 0xb2,
        ];
        assert_eq!(crc32_mpeg2(&pat), 0);
        assert_ne!(crc32_mpeg2(&pat[..15]), 0);
        let mut payload = vec![0u8];
        payload.extend_from_slice(&pat);
        let body = section(&payload, 0).unwrap();
        assert_eq!(
            body,
            &[0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00]
        );
        assert!(section(&payload, 2).is_none());
        payload[5] ^= 1;
        assert!(section(&payload, 0).is_none(), "bad CRC");
    }

    #[test]
    fn headers() {
        let mut p = [0xffu8; PACKET_LEN];
        p[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x30]);
        p[4] = 7;
        p[5] = 0x50;
        let h = Header::parse(&p).unwrap();
        assert_eq!(
            (h.pid, h.pusi, h.rai, h.payload_at),
            (0x100, true, true, 12)
        );
        p[3] = 0x20;
        p[4] = 183;
        assert_eq!(Header::parse(&p).unwrap().payload_at, PACKET_LEN);
        p[4] = 184;
        assert!(Header::parse(&p).is_none(), "adaptation field too long");
        p[3] = 0x00;
        assert!(
            Header::parse(&p).is_none(),
            "reserved adaptation_field_control"
        );
        p[3] = 0x10;
        p[1] = 0xc1;
        assert!(Header::parse(&p).is_none(), "transport error");
        p[1] = 0x01;
        let h = Header::parse(&p).unwrap();
        assert_eq!(
            (h.pid, h.pusi, h.rai, h.payload_at),
            (0x100, false, false, 4)
        );
    }

    #[test]
    fn elementary_stream_sniffing() {
        let pes = [0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 1, 2, 3, 4, 5];
        let mut h264 = pes.to_vec();
        h264.extend_from_slice(&[0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x67, 0x42]);
        assert!(es_starts_cleanly(0x1b, pes_data(&h264)));
        let mut p_frame = pes.to_vec();
        p_frame.extend_from_slice(&[0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x41, 0x9a]);
        assert!(!es_starts_cleanly(0x1b, pes_data(&p_frame)));
        let mut hevc = pes.to_vec();
        hevc.extend_from_slice(&[0, 0, 1, 0x26, 0x01]); // IDR_W_RADL
        assert!(es_starts_cleanly(0x24, pes_data(&hevc)));
        assert!(!es_starts_cleanly(0x1b, pes_data(&hevc)), "an H.264 SEI");
        let mut mpeg2 = pes.to_vec();
        mpeg2.extend_from_slice(&[0, 0, 1, 0xb3, 0x14]);
        assert!(es_starts_cleanly(0x02, pes_data(&mpeg2)));
        assert!(pes_data(&[0, 0, 1, 0xe0, 0, 0, 0x80]).is_empty());
    }

    #[test]
    fn garbage_never_syncs_and_costs_nothing_after() {
        let mut s = TsScanner::new();
        let text = b"Good evening. This is not a transport stream. ".repeat(200);
        assert!(s.scan(0, &text).is_empty());
        assert_eq!(s.verdict(), Verdict::NotMpegTs);
        assert!(s.scan(text.len() as u64, &[0x47; 1000]).is_empty());
        assert_eq!(s.verdict(), Verdict::NotMpegTs);
    }

    #[test]
    fn hunt_locks_mid_packet() {
        // Null packets, joined 100 bytes into the first one.
        let mut ts = Vec::new();
        for _ in 0..10 {
            let mut p = [0xffu8; PACKET_LEN];
            p[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
            ts.extend_from_slice(&p);
        }
        let mut s = TsScanner::new();
        s.scan(100, &ts[100..300]);
        assert_eq!(s.verdict(), Verdict::Unknown);
        s.scan(300, &ts[300..]);
        assert_eq!(s.verdict(), Verdict::MpegTs);
        assert_eq!(s.state, State::Locked);
        assert_eq!(s.part_len, 0, "locked at the packet boundary");
    }
}
