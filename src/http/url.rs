//! Percent-decoding of request paths and query strings, and a little JSON text: the few
//! pieces of URL and JSON handling the gateway needs, without a framework.

#![forbid(unsafe_code)]

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set, as forms encode queries);
/// `None` for a malformed escape.
pub fn decode(s: &str, plus: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A request's query parameters, decoded; a malformed pair is skipped.
pub struct Query(Vec<(String, Vec<u8>)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let k = String::from_utf8(decode(k, true)?).ok()?;
                Some((k, decode(v, true)?))
            })
            .collect();
        Query(pairs)
    }

    /// The last value of `key`, as bytes.
    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The last value of `key`, as text (`None` when absent or not UTF-8).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.bytes(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether `key` is present as a flag (`?stream`, `?stream=true`, `?stream=1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("" | "true" | "1" | "yes"))
    }
}

/// `s` as a JSON string literal, quotes included (the escaping of `status --json`).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    crate::json::write_str(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        for (input, plus, want) in [
            ("cam%201", false, Some(&b"cam 1"[..])),
            ("a+b", true, Some(b"a b")),
            ("a+b", false, Some(b"a+b")),
            ("%ff%00", false, Some(b"\xff\x00")),
            ("%4", false, None),
            ("%zz", false, None),
        ] {
            assert_eq!(decode(input, plus).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("from=-10s&path=%2Fcam1&stream=true&x&from=live"));
        assert_eq!(q.get("from"), Some("live"), "the last one wins");
        assert_eq!(q.bytes("path"), Some(&b"/cam1"[..]));
        assert!(q.flag("stream") && q.flag("x") && !q.flag("y"));
        assert!(Query::parse(None).get("from").is_none());
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }
}
