//! The gateway's pages in a real browser: headless Chromium (Debian's `chromium`) loads the
//! status page against a live mount with streams, a writer and readers (one stopped, so that
//! it drops) and shows what the page drew after its refreshes; the browser's own
//! `EventSource` reads a line stream as Server-Sent Events, replay then live, resuming after
//! an event id. Chromium's virtual time runs the page's timers at once and waits for its
//! network, so nothing here sleeps.

mod common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const HANG: Duration = Duration::from_secs(60);

/// Runs headless Chromium on `url` with `extra` flags (a fresh profile in `dir`, nothing
/// fetched but the page) and returns its stdout.
fn chromium_start(dir: &Path, extra: &[&str], url: &str) -> Child {
    assert!(
        Command::new("chromium")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "chromium is missing: install Debian's chromium (scripts/test does)"
    );
    let profile = tempfile::Builder::new()
        .prefix("chromium-")
        .tempdir_in(dir)
        .unwrap()
        .keep();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium")
}

fn chromium_finish(mut child: Child) -> String {
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).unwrap();
        s
    });
    if wait_child(&mut child, HANG).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not finish in {HANG:?}");
    }
    String::from_utf8_lossy(&reader.join().unwrap()).into_owned()
}

fn chromium(dir: &Path, extra: &[&str], url: &str) -> String {
    chromium_finish(chromium_start(dir, extra, url))
}

/// The value of attribute `attr` in the first tag holding `marker`.
fn tag_attr<'a>(dom: &'a str, marker: &str, attr: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let tag = &dom[start..at + dom[at..].find('>').unwrap()];
    let key = format!("{attr}=\"");
    let v = &tag[tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"))
        + key.len()..];
    &v[..v.find('"').unwrap()]
}

fn num(dom: &str, marker: &str, attr: &str) -> u64 {
    tag_attr(dom, marker, attr).parse().unwrap()
}

/// `cat > PATH`, fed by the test.
struct Writer(Child);

impl Writer {
    fn new(path: &Path) -> Writer {
        Writer(
            Command::new("sh")
                .arg("-c")
                .arg(format!("exec cat > '{}'", path.display()))
                .stdin(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn write(&mut self, data: &[u8]) {
        let w = self.0.stdin.as_mut().unwrap();
        w.write_all(data).unwrap();
        w.flush().unwrap();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_status_page_shows_readers_rate_ring_fill_and_drops() {
    let m = Mount::new(&[
        "--http",
        "127.0.0.1:0",
        "-o",
        "channel_buffer_size=64K,ring_buffer_size=1M",
    ]);
    let port = m.http_port();
    let dir = m.dir.path();

    // cam1: a writer, a mount reader and an HTTP reader, all keeping up.
    let cam1 = m.file("cam1");
    let mut writer = Writer::new(&cam1);
    writer.write(&[b'a'; 4096]);
    wait_for("the writer's stream", HANG, || cam1.exists());
    let mut cat = Proc::cat(&cam1);
    let mut curl = Proc::sh(&format!(
        "exec curl -sN http://127.0.0.1:{port}/streams/cam1"
    ));
    cat.read_at_least(4096, HANG);
    curl.read_at_least(4096, HANG);
    wait_readers(&cam1, 2);
    writer.write(&[b'b'; 60000]);
    cat.read_at_least(64096, HANG);
    // cam2: a stopped reader overflows its 64 KiB budget and drops.
    let cam2 = m.file("cam2");
    std::fs::File::create(&cam2).unwrap();
    let stopped = Proc::cat(&cam2);
    wait_readers(&cam2, 1);
    kill(stopped.child.id(), libc::SIGSTOP);
    let (code, _, err) = sh(&format!(
        "head -c 1048576 /dev/zero | dd of='{}' bs=4096 status=none",
        cam2.display()
    ));
    assert_eq!(code, 0, "{err}");
    // Names the page must show as text: markup, quotes, bytes that are not UTF-8.
    let hostile = "<img src=x onerror=alert(1)>\"q";
    std::fs::write(m.file(hostile), b"h").unwrap();
    std::fs::write(m.path.join(std::ffi::OsStr::from_bytes(b"raw\xff")), b"r").unwrap();

    // The writer goes on writing while the browser runs, so that cam1's rate (an average over
    // the last seconds) is not zero however slowly the browser starts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.write(&[b'c'; 1024]);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Virtual time: the page's one-second timer fires at once; the dump comes after several
    // refreshes, each waiting for its fetch.
    let url = format!("http://127.0.0.1:{port}/");
    let dom = chromium(dir, &["--virtual-time-budget=3000", "--dump-dom"], &url);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writing.join().unwrap();
    assert!(num(&dom, "<body", "data-refreshes") >= 2, "{dom}");
    assert!(dom.contains("4 streams, updated"), "{dom}");
    let row = |name: &str| format!("data-stream=\"{name}\"");
    assert_eq!(num(&dom, &row("cam1"), "data-readers"), 2);
    assert_eq!(num(&dom, &row("cam1"), "data-writers"), 1);
    assert_eq!(num(&dom, &row("cam1"), "data-dropped-writes"), 0);
    // cam1's own cells follow its row's tag, and its readers' rows come before the next
    // stream's row.
    let cam1_row = &dom[dom.find(&row("cam1")).unwrap()..];
    let cam1_row = &cam1_row[..cam1_row.find("class=\"stream\"").unwrap_or(cam1_row.len())];
    let fill: f64 = tag_attr(cam1_row, "class=\"ring\"", "data-fill")
        .parse()
        .unwrap();
    assert!(fill > 5.0, "64 KiB of a 1 MiB ring: {fill}");
    let rate = &cam1_row[cam1_row.find("class=\"n rate\">").unwrap() + "class=\"n rate\">".len()..];
    let rate: f64 = rate
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {rate}"));
    assert!(rate > 0.0, "cam1 was written to: {dom}");
    // Both readers of cam1 are listed under it, each with its label.
    assert!(cam1_row.contains("data-label=\"pid "), "{dom}");
    assert!(cam1_row.contains("data-label=\"http 127.0.0.1:"), "{dom}");
    let drops = num(&dom, &row("cam2"), "data-dropped-writes");
    assert!(drops > 200, "{drops}");
    assert!(dom.contains("class=\"n dropped drops\""), "{dom}");
    // The hostile name is text, not an element; the raw bytes show as \xff.
    assert!(
        dom.contains("<td class=\"name\">&lt;img src=x onerror=alert(1)&gt;\"q</td>"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    assert!(dom.contains("<td class=\"name\">raw\\xff</td>"), "{dom}");

    // A screenshot for a human, kept with the test binaries' temporary files.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        dir,
        &[
            "--virtual-time-budget=1500",
            "--window-size=1200,700",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    eprintln!("screenshot: {}", shot.display());
    kill(stopped.child.id(), libc::SIGCONT);
}

#[test]
fn event_source_gets_replay_then_live_lines_and_resumes_after_an_id() {
    let m = Mount::new(&["--http", "127.0.0.1:0", "--http-cors", "*"]);
    let port = m.http_port();
    let lines = m.file("lines");
    std::fs::write(&lines, b"one\ntwo\nthree\n").unwrap();
    // A page of the test's own (origin `null`, allowed by --http-cors '*'): the browser's
    // EventSource from after the first line (event id 4: the offset after "one\n"), closed
    // after four events so that the browser's virtual time can end.
    let page = m.dir.path().join("sse.html");
    std::fs::write(
        &page,
        format!(
            r#"<!doctype html><body data-events="0"><ul id="ev"></ul><script>
const es = new EventSource("http://127.0.0.1:{port}/streams/lines?format=sse&last_event_id=4");
let n = 0;
es.onmessage = (e) => {{
  const li = document.createElement("li");
  li.textContent = e.lastEventId + " " + e.data;
  document.getElementById("ev").appendChild(li);
  document.body.dataset.events = ++n;
  if (n === 4) es.close();
}};
es.onerror = () => {{ document.body.dataset.error = "yes"; }};
</script></body>"#
        ),
    )
    .unwrap();
    let browser = chromium_start(
        m.dir.path(),
        &["--virtual-time-budget=10000", "--dump-dom"],
        &format!("file://{}", page.display()),
    );
    // Once the browser's reader is registered, two live lines.
    wait_readers(&lines, 1);
    append(&lines, b"four\nfive\n");
    let dom = chromium_finish(browser);
    assert!(
        dom.contains("<li>8 two</li><li>14 three</li><li>19 four</li><li>24 five</li></ul>"),
        "{dom}"
    );
    assert!(!dom.contains("data-error"), "{dom}");
}

#[test]
fn the_page_passes_its_access_token_on_to_its_requests() {
    let m = Mount::with_token("s3cret");
    let port = m.http_port();
    std::fs::write(m.file("cam1"), b"x").unwrap();
    let dom = chromium(
        m.dir.path(),
        &["--virtual-time-budget=1500", "--dump-dom"],
        &format!("http://127.0.0.1:{port}/?access_token=s3cret"),
    );
    assert!(dom.contains("data-stream=\"cam1\""), "{dom}");
    assert!(dom.contains("1 stream, updated"), "{dom}");
    // Without the token the page itself is refused, and says why.
    let dom = chromium(
        m.dir.path(),
        &["--virtual-time-budget=1500", "--dump-dom"],
        &format!("http://127.0.0.1:{port}/"),
    );
    assert!(!dom.contains("data-stream="), "{dom}");
    assert!(
        dom.contains("a token is needed: Authorization: Bearer TOKEN"),
        "{dom}"
    );
}
