//! The original server's HTTP API (AGFS `/api/v1/...`), the subset its clients use on
//! streams: live read, append, create, delete, list, stat, health. Paths are `path=/NAME`,
//! or `path=PREFIX/NAME` with `--http-api-prefix PREFIX`. Answers are the original's JSON and
//! status codes, except `404` (not `500`) for a missing stream and `409` for creating one
//! that exists.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::access::{self, Op, Peer};
use super::body::{Body, ReaderBody, ReqBody};
use super::server::{Answer, Ctx, not_allowed, typed};
use super::streams::{Framing, label, open, read_headers, stream_error, upload, would_start};
use super::url::{Query, json_string};
use crate::stream::Stream;

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = typed("application/json", body);
    *r.status_mut() = status;
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    json(status, format!("{{\"error\":{}}}\n", json_string(msg)))
}

fn message(status: StatusCode, msg: &str) -> Response<Body> {
    json(status, format!("{{\"message\":{}}}\n", json_string(msg)))
}

/// What a `path=` names: the root (the directory of streams) or a stream.
enum Target {
    Root,
    Stream(Vec<u8>),
}

fn target(ctx: &Ctx, query: &Query) -> Result<Target, Response<Body>> {
    let Some(path) = query.bytes("path") else {
        return Err(error(StatusCode::BAD_REQUEST, "path parameter is required"));
    };
    let prefix = ctx.api_prefix.as_bytes();
    let rest = if prefix.is_empty() {
        path
    } else if path == prefix {
        b"/"
    } else if path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/') {
        &path[prefix.len()..]
    } else {
        return Err(error(StatusCode::NOT_FOUND, "no such file or directory"));
    };
    let name = rest.strip_prefix(b"/").unwrap_or(rest);
    let name = name.strip_suffix(b"/").unwrap_or(name);
    if name.is_empty() {
        Ok(Target::Root)
    } else if name.contains(&b'/') {
        Err(error(StatusCode::NOT_FOUND, "no such file or directory"))
    } else {
        Ok(Target::Stream(name.to_vec()))
    }
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// A stream as the original's FileInfo: `size` is the bytes written, `meta` its counters
/// (string values, capitalised keys, as the original). The count of its readers is shown
/// only to a client that may read it (`readable`), as its attributes are on the mount.
fn file_info(name: &[u8], s: &Stream, readable: bool) -> String {
    let st = s.stats();
    let readers = if readable {
        format!(",\"active_readers\":\"{}\"", st.readers)
    } else {
        String::new()
    };
    format!(
        "{{\"name\":{},\"size\":{},\"mode\":{},\"modTime\":\"{}\",\"isDir\":false,\
         \"meta\":{{\"Name\":\"streamfs\",\"Type\":\"stream\",\"Content\":{{\
         \"total_written\":\"{}\"{readers}}}}}}}",
        json_string(&String::from_utf8_lossy(name)),
        st.written_bytes,
        s.meta().mode,
        rfc3339(st.mtime),
        st.written_bytes,
    )
}

fn root_info() -> String {
    format!(
        "{{\"name\":\"/\",\"size\":0,\"mode\":{},\"modTime\":\"{}\",\"isDir\":true,\
         \"meta\":{{\"Name\":\"streamfs\",\"Type\":\"directory\"}}}}",
        0o755 | 0o040000,
        rfc3339(SystemTime::now())
    )
}

fn listing(ctx: &Ctx, remote: Peer) -> String {
    let readable = access::reader_of(ctx, remote);
    let mut out = String::from("{\"files\":[");
    let mut after = 0;
    let mut first = true;
    loop {
        let page = ctx.ns.list_after(after, 1024);
        let Some(last) = page.last() else { break };
        after = last.0;
        for (id, name) in &page {
            if let Some(s) = ctx.ns.get(*id) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&file_info(name, &s, readable(&s)));
            }
        }
    }
    out.push_str("]}\n");
    out
}

/// Routes `/api/v1/...`, every error answered as the original's `{"error": "..."}`.
pub fn route<'a>(req: Request<ReqBody>, ctx: &'a Ctx, remote: Peer) -> Answer<'a> {
    dispatch(req, ctx, remote).map(as_json)
}

/// `r`, an error of which is answered as the original's `{"error": "..."}`.
fn as_json(r: Response<Body>) -> Response<Body> {
    if !(r.status().is_client_error() || r.status().is_server_error()) {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let plain = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    match body {
        Body::Full(Some(text)) if plain => {
            let msg = String::from_utf8_lossy(&text).trim_end().to_string();
            let json = error(parts.status, &msg);
            let (json_parts, body) = json.into_parts();
            parts.headers.extend(json_parts.headers);
            Response::from_parts(parts, body)
        }
        body => Response::from_parts(parts, body),
    }
}

fn dispatch<'a>(req: Request<ReqBody>, ctx: &'a Ctx, remote: Peer) -> Answer<'a> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let m = req.method().clone();
    let stream_name = |t: Target| match t {
        Target::Stream(n) => Ok(n),
        Target::Root => Err(error(StatusCode::BAD_REQUEST, "is a directory")),
    };
    let resp = match path.as_str() {
        "/api/v1/health" | "/api/v1/ready" => match m {
            Method::GET | Method::HEAD => json(
                StatusCode::OK,
                format!(
                    "{{\"status\":\"healthy\",\"version\":\"{}\"}}\n",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
            _ => not_allowed("GET, HEAD"),
        },
        "/api/v1/directories" | "/api/v1/list" => {
            if !matches!(m, Method::GET | Method::HEAD) {
                return not_allowed("GET, HEAD").into();
            }
            match target(ctx, &query) {
                Ok(Target::Root) => json(StatusCode::OK, listing(ctx, remote)),
                Ok(Target::Stream(_)) => error(StatusCode::BAD_REQUEST, "not a directory"),
                Err(r) => r,
            }
        }
        "/api/v1/stat" => {
            if !matches!(m, Method::GET | Method::HEAD) {
                return not_allowed("GET, HEAD").into();
            }
            match target(ctx, &query) {
                Ok(Target::Root) => json(StatusCode::OK, root_info() + "\n"),
                Ok(Target::Stream(n)) => match ctx.ns.lookup(&n) {
                    Some(s) => match access::check(ctx, remote, Op::Read(&s.meta())) {
                        Ok(()) => json(StatusCode::OK, file_info(&n, &s, true) + "\n"),
                        Err(r) => r,
                    },
                    None => error(StatusCode::NOT_FOUND, "no such file or directory"),
                },
                Err(r) => r,
            }
        }
        "/api/v1/files" | "/api/v1/write" => {
            let name = match target(ctx, &query).and_then(stream_name) {
                Ok(n) => n,
                Err(r) => return r.into(),
            };
            let write_alias = path == "/api/v1/write";
            if m == Method::PUT || (m == Method::POST && write_alias) {
                return append(req, ctx, name, remote);
            }
            match m {
                Method::GET | Method::HEAD if !write_alias => {
                    read(&req, ctx, &name, &query, remote)
                }
                Method::POST => match ctx.ns.lookup(&name) {
                    Some(_) => error(StatusCode::CONFLICT, "file already exists"),
                    None => match access::check(ctx, remote, Op::Create)
                        .map(|()| ctx.ns.create(&name, access::new_meta(ctx, remote)))
                    {
                        Err(r) => r,
                        Ok(Ok((_, true))) => message(StatusCode::CREATED, "file created"),
                        Ok(Ok((_, false))) => error(StatusCode::CONFLICT, "file already exists"),
                        Ok(Err(e)) => {
                            let (status, msg) = stream_error(&e);
                            error(status, &msg)
                        }
                    },
                },
                Method::DELETE if !write_alias => match access::remove(ctx, remote, &name) {
                    Ok(()) => message(StatusCode::OK, "deleted"),
                    Err(Some(refused)) => refused,
                    Err(None) => error(StatusCode::NOT_FOUND, "no such file or directory"),
                },
                _ if write_alias => not_allowed("PUT, POST"),
                _ => not_allowed("GET, HEAD, PUT, POST, DELETE"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    resp.into()
}

/// `GET /api/v1/files?path=&stream=true`: the live read (replay, then live data); a `HEAD`
/// answers its head without opening a reader.
fn read(
    req: &Request<ReqBody>,
    ctx: &Ctx,
    name: &[u8],
    query: &Query,
    remote: Peer,
) -> Response<Body> {
    if !query.flag("stream") {
        return error(
            StatusCode::BAD_REQUEST,
            "use stream mode for reading stream files (stream=true)",
        );
    }
    let Some(stream) = ctx.ns.lookup(name) else {
        return error(StatusCode::NOT_FOUND, "no such file or directory");
    };
    if let Err(r) = access::check(ctx, remote, Op::Read(&stream.meta())) {
        return r;
    }
    let (body, offset) = if req.method() == Method::HEAD {
        match would_start(&stream, query.get("from")) {
            Ok(offset) => (Body::empty(), offset),
            Err(r) => return r,
        }
    } else {
        let reader = match open(&stream, query.get("from"), label(req, remote)) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let offset = reader.stats().start;
        let body = ReaderBody::with_coalesce(reader, ctx.mount.http.coalesce);
        (Body::Stream(body), offset)
    };
    let mut r = Response::new(body);
    read_headers(&mut r, &stream, offset);
    // The original always answers octet-stream here.
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// `PUT /api/v1/files` (and `POST /api/v1/write`): append the body as it arrives.
fn append<'a>(req: Request<ReqBody>, ctx: &'a Ctx, name: Vec<u8>, remote: Peer) -> Answer<'a> {
    Answer::later(async move {
        match upload(req, ctx, &name, Framing::Frames, remote).await {
            Ok((_, n)) => message(StatusCode::OK, &format!("Written {n} bytes")),
            Err(r) => r,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }
}
