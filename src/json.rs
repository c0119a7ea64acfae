//! A small JSON writer for the documents streamfs prints (`status --json`, the HTTP
//! gateway's listings): values built in memory, written compactly on one line, every string
//! escaped so that no name can break the document or reach a terminal as a control
//! character. Knows nothing of where the document goes; the project needs no JSON parser.

#![forbid(unsafe_code)]

use std::fmt::Write as _;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// A number, already in JSON syntax.
    Num(String),
    Str(String),
    Bool(bool),
    Arr(Vec<Json>),
    Obj(Obj),
}

/// A JSON object that keeps its keys in insertion order and never repeats one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Obj(pub Vec<(String, Json)>);

impl Obj {
    /// Adds `key` unless it is there already (the first value of a key wins).
    pub fn add(&mut self, key: &str, value: Json) {
        if !self.0.iter().any(|(k, _)| k == key) {
            self.0.push((key.to_string(), value));
        }
    }

    /// Adds text that may not be UTF-8: as a string (invalid bytes as U+FFFD) and, when it is
    /// not UTF-8, its exact bytes in hex under `KEY_hex`.
    pub fn add_bytes(&mut self, key: &str, bytes: &[u8]) {
        self.add(key, Json::Str(String::from_utf8_lossy(bytes).into_owned()));
        if std::str::from_utf8(bytes).is_err() {
            let hex = bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
            self.add(&format!("{key}_hex"), Json::Str(hex));
        }
    }
}

impl Json {
    /// A whole number.
    pub fn num(n: impl Into<u64>) -> Json {
        Json::Num(n.into().to_string())
    }

    /// Appends the value to `out`.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_str(out, s),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(Obj(fields)) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The value as a document.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// A JSON string. Every control character (C0, DEL, C1) and the line separators U+2028 and
/// U+2029 are written as `\uXXXX`, so the document holds no byte a terminal acts on and
/// stays one line.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Attribute text as a JSON value: a number when it is one (integer or decimal), else a
/// string (the rule of the `status --json` schema).
pub fn typed(text: &str) -> Json {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Json::Num(n.to_string());
    }
    if let Ok(n) = t.parse::<i64>() {
        return Json::Num(n.to_string());
    }
    let decimal = {
        let digits = t.strip_prefix('-').unwrap_or(t);
        match digits.split_once('.') {
            Some((w, f)) => {
                !w.is_empty()
                    && !f.is_empty()
                    && w.bytes().all(|b| b.is_ascii_digit())
                    && f.bytes().all(|b| b.is_ascii_digit())
            }
            None => !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        }
    };
    if decimal
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Json::Num(f.to_string());
    }
    Json::Str(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        assert_eq!(typed("42"), Json::Num("42".into()));
        assert_eq!(typed("42\n"), Json::Num("42".into()));
        assert_eq!(typed("-3"), Json::Num("-3".into()));
        assert_eq!(typed("1.5"), Json::Num("1.5".into()));
        assert_eq!(typed("007"), Json::Num("7".into()));
        assert_eq!(typed("drop"), Json::Str("drop".into()));
        assert_eq!(typed("1e5"), Json::Str("1e5".into()));
        assert_eq!(typed("."), Json::Str(".".into()));
        assert_eq!(typed(""), Json::Str("".into()));
    }

    #[test]
    fn strings_hold_no_control_characters() {
        let mut o = Obj::default();
        o.add_bytes("name", b"a\nb\x1b[2J\xff\xc2\x9b\"\\");
        o.add("name", Json::Str("dup".into()));
        let s = Json::Obj(o).to_text();
        assert_eq!(
            s,
            "{\"name\":\"a\\nb\\u001b[2J\u{fffd}\\u009b\\\"\\\\\",\
             \"name_hex\":\"610a621b5b324affc29b225c\"}"
        );
        assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f));
    }
}
