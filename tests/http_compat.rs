//! The original server's HTTP API (`/api/v1/...`) as its Python clients use it, against a
//! real mount with `--http-api-prefix /streamfs`: create, list, stat, a live read that sees a
//! chunked PUT as it arrives, delete ending the read, health, and the status codes.

mod common;

use std::process::Command;

use common::*;

const SCRIPT: &str = r#"
import sys, threading, requests
port = sys.argv[1]
api = f"http://127.0.0.1:{port}/api/v1"
P = "/streamfs/cam1"

def check(r, status, what):
    assert r.status_code == status, (what, r.status_code, r.text)
    return r

j = check(requests.get(api + "/health"), 200, "health").json()
assert j["status"] == "healthy", j
check(requests.post(api + "/files", params={"path": P}), 201, "create")
e = check(requests.post(api + "/files", params={"path": P}), 409, "create again").json()
assert "exists" in e["error"], e
files = check(requests.get(api + "/directories", params={"path": "/streamfs"}), 200, "list").json()["files"]
assert [f["name"] for f in files] == ["cam1"], files
f = files[0]
assert f["isDir"] is False and f["size"] == 0 and f["mode"] == 0o644, f
assert f["meta"]["Type"] == "stream" and f["meta"]["Content"]["total_written"] == "0", f
assert f["modTime"].endswith("Z"), f

# A live read, then a chunked upload whose second piece waits until the first was read.
got = bytearray()
first_seen = threading.Event()
def reader():
    r = requests.get(api + "/files", params={"path": P, "stream": "true"}, stream=True, timeout=(10, 60))
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Type"] == "application/octet-stream", r.headers
    for c in r.iter_content(chunk_size=None):
        got.extend(c)
        if bytes(got).startswith(b"first\n"):
            first_seen.set()
t = threading.Thread(target=reader)
t.start()
def body():
    yield b"first\n"
    assert first_seen.wait(10), "the first piece did not reach the reader during the upload"
    yield b"second\n"
m = check(requests.put(api + "/files", params={"path": P}, data=body()), 200, "put").json()
assert m["message"] == "Written 13 bytes", m
check(requests.post(api + "/write", params={"path": P}, data=b"third\n"), 200, "write alias")
st = check(requests.get(api + "/stat", params={"path": P}), 200, "stat").json()
assert st["size"] == 19 and st["meta"]["Content"]["active_readers"] == "1", st
print(open(sys.argv[2] + "/cam1", "rb").read(0) == b"", flush=True)

# Delete ends the live read cleanly; the missing stream is a 404 everywhere.
check(requests.delete(api + "/files", params={"path": P}), 200, "delete")
t.join(10)
assert not t.is_alive() and bytes(got) == b"first\nsecond\nthird\n", bytes(got)
check(requests.delete(api + "/files", params={"path": P}), 404, "delete again")
check(requests.get(api + "/stat", params={"path": P}), 404, "stat missing")
check(requests.get(api + "/files", params={"path": P, "stream": "true"}), 404, "read missing")
check(requests.get(api + "/stat", params={"path": "/elsewhere/cam1"}), 404, "outside the prefix")
check(requests.get(api + "/files", params={"path": "/streamfs/x"}), 400, "read without stream=true")
check(requests.get(api + "/files"), 400, "no path")
check(requests.patch(api + "/files", params={"path": P}), 405, "wrong method")
check(requests.get(api + "/handles/1/stream"), 404, "the handles API is not served")
root = check(requests.get(api + "/stat", params={"path": "/streamfs"}), 200, "stat root").json()
assert root["isDir"] is True, root
print("ok")
"#;

#[test]
fn the_original_api_works_for_its_python_clients() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "--http-api-prefix", "/streamfs"]);
    let port = m.http_port();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(&m.path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "True\nok\n");
}
