//! Self-checking records for the tests of streams shared by several writers: each record
//! says who wrote it, its number and length, and ends with a checksum of all of it, so a
//! reader can tell a whole record from a torn, mixed or shifted one.

const MAGIC: &[u8; 4] = b"SFSR";
/// Magic, writer, number, payload length; then the payload; then the checksum.
pub const HEADER: usize = 16;

fn sum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Record `seq` of `writer` with `len` payload bytes.
pub fn record(writer: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + len + 4);
    r.extend_from_slice(MAGIC);
    r.extend_from_slice(&writer.to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&(len as u32).to_le_bytes());
    r.extend((0..len).map(|i| (i as u32 ^ writer.wrapping_mul(31) ^ seq) as u8));
    let s = sum(&r);
    r.extend_from_slice(&s.to_le_bytes());
    r
}

/// The (writer, seq) of every record in `bytes`, in order; panics at the first byte that
/// is not a whole, intact record.
pub fn parse(bytes: &[u8]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        assert!(
            rest.len() >= HEADER && &rest[..4] == MAGIC,
            "no record at byte {at} (after {} records)",
            out.len()
        );
        let word = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().unwrap());
        let (writer, seq, len) = (word(4), word(8), word(12) as usize);
        let end = HEADER + len + 4;
        assert!(rest.len() >= end, "record {writer}/{seq} torn at byte {at}");
        assert_eq!(
            sum(&rest[..end - 4]),
            u32::from_le_bytes(rest[end - 4..end].try_into().unwrap()),
            "record {writer}/{seq} at byte {at} is damaged"
        );
        out.push((writer, seq));
        at += end;
    }
    out
}
