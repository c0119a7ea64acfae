//! Escaping of untrusted text (stream names, command names, paths) before it is printed in a
//! log line, a status table or an attribute: anyone who can name a stream or a process can
//! otherwise forge lines or send terminal escape sequences to the operator's screen.
//! Knows nothing of where the text goes.

#![forbid(unsafe_code)]

use std::fmt::Write;

/// `bytes` as one printable line: valid UTF-8 stays as it is, except control characters
/// (newline, tab, escape, DEL, C1 controls), the backslash and invalid bytes, which become
/// `\n`, `\t`, `\\` or `\xNN`. The result never holds a control character, so it cannot end
/// or forge a line.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`escape_bytes`] of a string.
pub fn escape(s: &str) -> String {
    escape_bytes(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escape("cam1"), "cam1");
        assert_eq!(escape("caméra 1"), "caméra 1");
    }

    #[test]
    fn controls_cannot_forge_lines() {
        assert_eq!(escape("x)\nWARN forged"), "x)\\nWARN forged");
        assert_eq!(escape("a\tb\rc"), "a\\tb\\rc");
        assert_eq!(escape("\x1b[2J"), "\\u{1b}[2J");
        assert_eq!(escape("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
    }

    #[test]
    fn backslashes_and_invalid_bytes_are_unambiguous() {
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_eq!(escape_bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
    }
}
