//! How stream names map onto JetStream stream and subject names, reversibly. Knows nothing
//! of connections or the core.
//!
//! A stream named N under prefix P is the JetStream stream `P_E` with the one subject
//! `sfs.P.E`, where E is N with every byte other than an ASCII letter, digit or `-` written
//! as `_` and two uppercase hex digits (so `_` itself is `_5F`, `.` is `_2E`). JetStream
//! forbids `.`, `*`, `>`, whitespace and path separators in stream names and gives `.`, `*`
//! and `>` meanings in subjects; E holds none of them, and P is limited to letters, digits
//! and `-`, so the first `_` of a JetStream name always ends the prefix.

/// The longest JetStream stream name the server takes.
pub const JS_NAME_MAX: usize = 255;

/// The default namespace prefix (`nats_prefix`).
pub const DEFAULT_PREFIX: &str = "streamfs";

/// Whether `prefix` may be a namespace prefix: 1 to 32 ASCII letters, digits or `-`.
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The JetStream stream name of stream `name`, or `None` when it would be longer than
/// [`JS_NAME_MAX`].
pub fn stream_name(prefix: &str, name: &[u8]) -> Option<String> {
    let n = format!("{prefix}_{}", escape(name));
    (n.len() <= JS_NAME_MAX).then_some(n)
}

/// The subject the writes of stream `name` are published on.
pub fn subject(prefix: &str, name: &[u8]) -> String {
    format!("sfs.{prefix}.{}", escape(name))
}

/// The stream name that JetStream stream `js` stands for, when it is one of `prefix`'s.
pub fn decode(prefix: &str, js: &str) -> Option<Vec<u8>> {
    let rest = js.strip_prefix(prefix)?.strip_prefix('_')?;
    let name = unescape(rest)?;
    // Only the one spelling `escape` makes (uppercase hex, nothing escaped needlessly).
    (!name.is_empty() && escape(&name) == rest).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_hold_nothing_jetstream_forbids() {
        let cases: &[(&[u8], &str)] = &[
            (b"cam1", "streamfs_cam1"),
            (b"my_cam", "streamfs_my_5Fcam"),
            (b"a.b", "streamfs_a_2Eb"),
            (b"x*y>z w", "streamfs_x_2Ay_3Ez_20w"),
            (b"caf\xc3\xa9", "streamfs_caf_C3_A9"),
            (b"-", "streamfs_-"),
        ];
        for (name, js) in cases {
            let got = stream_name(DEFAULT_PREFIX, name).unwrap();
            assert_eq!(&got, js);
            assert!(!got.contains(['.', '*', '>', ' ', '/', '\\']), "{got}");
            assert_eq!(decode(DEFAULT_PREFIX, &got).as_deref(), Some(*name));
            let subj = subject(DEFAULT_PREFIX, name);
            assert_eq!(subj.matches('.').count(), 2, "{subj}");
        }
    }

    #[test]
    fn foreign_or_misspelt_jetstream_names_are_not_streams() {
        for js in [
            "other_cam1",
            "streamfs",
            "streamfs_",
            "streamfs_a_2e",
            "streamfs_a_2",
            "streamfs_a_61",
            "streamfs_a.b",
            "streamfs-x_cam",
        ] {
            assert_eq!(decode(DEFAULT_PREFIX, js), None, "{js}");
        }
    }

    #[test]
    fn long_names_and_prefixes() {
        assert!(stream_name("p", &[b'a'; 253]).is_some());
        assert!(stream_name("p", &[b'a'; 254]).is_none());
        assert!(stream_name("p", &[b'.'; 85]).is_none());
        for (prefix, ok) in [
            ("streamfs", true),
            ("a-1", true),
            ("", false),
            ("a_b", false),
        ] {
            assert_eq!(valid_prefix(prefix), ok, "{prefix}");
        }
        assert!(!valid_prefix(&"a".repeat(33)));
    }
}
