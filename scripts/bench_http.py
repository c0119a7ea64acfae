"""The `http` scenario of scripts/bench (imported by bench.py, whose helpers it uses through
the module handed to `scenario`): streamfs's HTTP gateway against Icecast, the server people
use for live streams over HTTP, on the same machine in the same run.

- Listeners: one source of 2 Mbit/s (4 KiB every 16.4 ms; into the mount for streamfs, an
  HTTP PUT of audio/mpeg for Icecast), N listeners held by one epoll client
  (scripts/httpload.rs) that counts bytes per connection. Between two marks a few seconds
  apart the bench samples the server's CPU time and RSS: CPU-seconds per GiB delivered, RSS
  per listener (over the server's RSS with the source alone, taken after 16 listeners came
  and went, so that what a server's threads touch once on first use is left out), and
  whether every listener got the whole window (the server took the source at its rate,
  none ended, the slowest got at least 95 % of what the source sent).
- 1 -> 1: 1 MiB writes into the mount read by one HTTP GET (httpload drain, 1 MiB reads)
  against one `dd bs=1M` reader on the mount (slow_reader=block, lossless).

Icecast (Debian's icecast2) is installed on first run like the other baselines, and runs as
`nobody` with a generated configuration on a loopback port under the bench's directory.
"""

import base64
import os
import pwd
import re
import resource
import shutil
import socket
import subprocess
import threading
import time

SOURCE_RATE = 250_000  # bytes/s: 2 Mbit/s
BLOCK = 4096
# Handshakes at a time: Icecast listens with a backlog of 5, and overflowing it costs
# seconds of SYN retries per connection.
WINDOW = 16
ICE_PASS = "benchsource"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, what, timeout=30.0):
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(f"{what} is not listening on port {port}")
            time.sleep(0.01)


class Source(threading.Thread):
    """Writes BLOCK-byte blocks on an absolute schedule at SOURCE_RATE into `sink` (a file
    object or a socket) until stopped; `sent` is the byte count so far."""

    def __init__(self, send):
        super().__init__(daemon=True)
        self.send = send
        self.sent = 0
        self.error = None
        self.stopped = threading.Event()

    def run(self):
        block = b"\0" * BLOCK
        t0 = time.monotonic()
        try:
            while not self.stopped.is_set():
                wait = t0 + self.sent / SOURCE_RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.send(block)
                self.sent += BLOCK
        except OSError as e:
            self.error = e

    def stop(self):
        self.stopped.set()
        self.join(10)


def ensure_icecast(b):
    if shutil.which("icecast2"):
        return True
    if os.geteuid() != 0:
        b.log("http: icecast2 is missing and this is not root to install it: Icecast rows left out")
        return False
    b.log("http: installing Debian's icecast2 (the baseline of the http scenario)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "icecast2"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            b.log("http: could not install icecast2: Icecast rows left out")
            return False
    return bool(shutil.which("icecast2"))


ICE_CONF = """<icecast>
  <location>bench</location><admin>bench@localhost</admin>
  <limits>
    <clients>{clients}</clients><sources>2</sources>
    <queue-size>524288</queue-size><client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>65536</burst-size>
  </limits>
  <authentication>
    <source-password>{password}</source-password><relay-password>{password}r</relay-password>
    <admin-user>admin</admin-user><admin-password>{password}a</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths>
    <basedir>{dir}</basedir><logdir>{dir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot></security>
</icecast>
"""


class Icecast:
    """icecast2 as `nobody` on a free loopback port, with a PUT source on /live."""

    def __init__(self, b, clients):
        self.b = b
        b.mount_seq[0] += 1
        # nobody must reach its directory through the bench's (mode 0700 from mktemp).
        os.chmod(b.WORK, 0o711)
        self.dir = os.path.join(b.WORK, f"icecast{b.mount_seq[0]}")
        os.mkdir(self.dir)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        self.port = free_port()
        conf = os.path.join(self.dir, "icecast.xml")
        with open(conf, "w") as f:
            f.write(ICE_CONF.format(clients=clients, password=ICE_PASS, port=self.port, dir=self.dir))
        # Runs in the foreground as nobody (Icecast refuses root), with the file limit this
        # process raised (the child keeps it across the change of user).
        self.proc = b.spawn(["icecast2", "-c", conf], user=nobody.pw_uid, group=nobody.pw_gid,
                            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_port(self.port, "icecast2")
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        auth = base64.b64encode(f"source:{ICE_PASS}".encode()).decode()
        self.sock.sendall((f"PUT /live HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                           f"Authorization: Basic {auth}\r\nContent-Type: audio/mpeg\r\n"
                           "Ice-Public: 0\r\n\r\n").encode())
        head = self.sock.recv(4096)
        if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"icecast2 refused the source: {head[:200]!r}")
        self.source = Source(self.sock.sendall)
        self.source.start()
        self.url = f"http://127.0.0.1:{self.port}/live"
        # Listeners are refused until the mount has data.
        self.b.wait_until(lambda: self.source.sent >= 8 * BLOCK, "the Icecast source")

    def drops(self):
        return None  # Icecast counts none; a listener past queue-size is disconnected

    def close(self):
        self.source.stop()
        self.sock.close()
        self.b.kill_all()


class Gateway:
    """A streamfs mount serving HTTP on a free loopback port, with a source on one stream."""

    def __init__(self, b, opts):
        self.b = b
        self.port = free_port()
        self.m = b.Mount("http", f"{opts},http=127.0.0.1:{self.port}")
        self.pid = self.m.pid
        wait_port(self.port, "the streamfs gateway")
        self.path = self.m.stream("live")
        self.url = f"http://127.0.0.1:{self.port}/streams/{os.path.basename(self.path)}"
        self.source = None

    def start_source(self):
        self.f = open(self.path, "wb", buffering=0)
        self.source = Source(self.f.write)
        self.source.start()
        self.b.wait_until(lambda: self.source.sent >= 8 * BLOCK, "the stream source")

    def drops(self):
        return self.b.xnum(self.path, "dropped_writes")

    def close(self):
        if self.source:
            self.source.stop()
            self.f.close()
        self.m.close()


LISTEN_OPTS = "ring_buffer_size=64K,channel_buffer_size=512K"


def listen_run(b, contender, n, warmup, measure):
    srv = Gateway(b, LISTEN_OPTS) if contender == "streamfs" else Icecast(b, n + 100)
    try:
        if contender == "streamfs":
            srv.start_source()
        # A few listeners first, gone before the base is taken: what a server's threads
        # touch once on first use (code pages, allocator arenas, stacks) is not a listener's
        # cost.
        warm = b.spawn([HTTPLOAD[0], "listen", srv.url, str(WINDOW), "0.2", "0.3", str(WINDOW)],
                       stdout=subprocess.DEVNULL)
        b.reap(warm)
        time.sleep(0.5)  # the source alone, settled: the RSS base
        rss0 = b.rss(srv.pid)
        client = b.spawn([HTTPLOAD[0], "listen", srv.url, str(n), str(warmup), str(measure),
                          str(WINDOW)], stdout=subprocess.PIPE, text=True)
        marks = {}
        result = None
        for line in client.stdout:
            words = line.split()
            if words[:2] == ["mark", "start"] or words[:2] == ["mark", "end"]:
                marks[words[1]] = (b.cpu_seconds(srv.pid), srv.source.sent, b.rss(srv.pid), srv.drops())
            elif words[:1] == ["result"]:
                result = dict(kv.split("=") for kv in words[1:])
            elif words[:1] == ["connected"]:
                b.log(f"http {contender} N={n}: {line.strip()}")
        b.reap(client)
        if result is None or set(marks) != {"start", "end"}:
            raise RuntimeError(f"httpload gave no result for {contender} N={n}")
        if srv.source.error:
            raise RuntimeError(f"the {contender} source failed: {srv.source.error}")
        (c0, s0, _, d0), (c1, s1, rss1, d1) = marks["start"], marks["end"]
        sent = s1 - s0
        got = int(result["sum"])
        listeners = int(result["listeners"])
        slowest = int(result["min"])
        # Held: the server took the source at its rate (a server too busy to read it holds
        # the source back, and its listeners then get little and seem on time), no listener
        # ended, and the slowest got nearly all of it.
        on_time = sent >= 0.95 * SOURCE_RATE * float(result["secs"])
        held = on_time and listeners == n and int(result["ended"]) == 0 and slowest >= 0.95 * sent
        drops = None if d0 is None else d1 - d0
        return dict(cpu=(c1 - c0) / (got / b.GiB) if got else float("nan"),
                    rss=(rss1 - rss0) / n, held=held, listeners=listeners,
                    slowest=slowest / sent if sent else 0.0, source=sent / float(result["secs"]),
                    gbs=got / float(result["secs"]) / 1e9, drops=drops,
                    show=f"{listeners}/{n} ended={result['ended']} source={sent / float(result['secs']) / 1e3:.0f}kB/s "
                         f"slowest={slowest / max(sent, 1):.2f} "
                         f"held={held} cpu/GiB={(c1 - c0) / max(got / b.GiB, 1e-9):.2f}")
    finally:
        srv.close()


TP_HTTP_OPTS = "channel_buffer_size=64M,ring_buffer_size=6M,slow_reader=block"


def tp_run(b, contender, total):
    g = Gateway(b, TP_HTTP_OPTS)
    try:
        if contender == "http":
            r = b.spawn([HTTPLOAD[0], "drain", g.url], stdout=subprocess.PIPE, text=True)
        else:
            r, rerr = b.dd(b.reader_dd(g.path))
        b.wait_readers(g.path, 1)
        cpu0 = b.cpu_seconds(g.pid)
        t0 = time.monotonic()
        w, _ = b.dd(b.writer_dd(g.path, "1M", total // b.MiB))
        [(_, rc, _)] = b.wait_procs([w], 300, "the stream writer")
        if rc != 0:
            raise RuntimeError(f"stream writer exited {rc}")
        os.unlink(g.path)  # the reader gets EOF (the end of the body) after its queue
        if contender == "http":
            text = r.stdout.read()
        [(t1, rc, _)] = b.wait_procs([r], 300, "the stream reader")
        cpu = b.cpu_seconds(g.pid) - cpu0
        if rc != 0:
            raise RuntimeError(f"{contender} reader exited {rc}")
        got = int(re.search(r"bytes=(\d+)", text).group(1)) if contender == "http" else b.dd_bytes(rerr)
        if got != total:
            raise RuntimeError(f"{contender} reader got {got} of {total} bytes")
        gbs = got / (t1 - t0) / 1e9
        return dict(gbs=gbs, cpu=cpu / (got / b.GiB), show=f"{gbs:.2f}")
    finally:
        g.close()


HTTPLOAD = [None]


def scenario(b):
    HTTPLOAD[0] = os.path.join(os.path.dirname(b.NULLFS), "httpload")
    quick = b.QUICK
    counts = [100, 1000] if quick else [100, 1000, 5000]
    warmup, measure = (1.0, 4.0) if quick else (2.0, 8.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(counts) * 2 + 1024
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        pass
    have_ice = ensure_icecast(b)
    contenders = ["streamfs", "icecast"] if have_ice else ["streamfs"]
    b.out("## HTTP gateway: listeners against Icecast, and 1 → 1")
    b.out()
    b.out(f"One source of 2 Mbit/s ({BLOCK}-byte blocks on a schedule; into the mount for streamfs, "
          "an HTTP PUT of audio/mpeg for Icecast 2, `icecast2` as nobody, queue 512 KiB, burst "
          "64 KiB) and N listeners held by one epoll client (scripts/httpload.rs) counting bytes per "
          f"connection. Over a {measure:g} s window after all N connected and {warmup:g} s more: "
          "server CPU-seconds per GiB delivered, server RSS per listener (over its RSS with the source "
          "alone, after 16 listeners came and went), and whether N were **held**: the server took the source at ≥ 95 % of its rate, none "
          "ended, and the slowest got ≥ 95 % of what the source sent. streamfs: ring 64 KiB, channel 512 KiB, policy drop (its drops column: writes "
          "dropped for listeners in the window). Ratio = streamfs ÷ Icecast per round, **median** "
          "(min–max): **< 1 means streamfs uses less**.")
    b.out()
    rows = []
    largest = {c: 0 for c in contenders}
    ratios = {}
    for n in counts:
        reps = b.REPS if n < 5000 else min(b.REPS, 3)
        res = b.run_rounds(f"http listeners N={n}", contenders,
                           lambda c: listen_run(b, c, n, warmup, measure), reps)
        for c in contenders:
            rs = res[c]
            # Held in every round, and (where the server counts them) nothing dropped.
            if all(x["held"] and not x["drops"] for x in rs):
                largest[c] = max(largest[c], n)
            cpu_ratio = rss_ratio = "—"
            if c == "streamfs" and "icecast" in res:
                rc = b.per_round_ratios(rs, res["icecast"], "cpu")
                rr = b.per_round_ratios(rs, res["icecast"], "rss")
                ratios[n] = (rc, rr)
                cpu_ratio, rss_ratio = b.ratio_cell(rc), b.ratio_cell(rr)
            drops = [x["drops"] for x in rs if x["drops"] is not None]
            rows.append([str(n) if c == contenders[0] else "", c,
                         f"{sum(x['held'] for x in rs)}/{len(rs)}",
                         f"{min(x['source'] for x in rs) / 1e3:.0f}",
                         f"{100 * min(x['slowest'] for x in rs):.0f} %",
                         b.f2(b.med([x["cpu"] for x in rs])), cpu_ratio,
                         f"{b.med([x['rss'] for x in rs]) / b.KiB:.1f}", rss_ratio,
                         str(max(drops)) if drops else "—"])
    b.table(["N", "server", "held", "source kB/s (min)", "slowest got", "CPU s/GiB", "CPU ÷ Icecast",
             "RSS KiB/listener", "RSS ÷ Icecast", "drops"], rows, "llrrrrrrrr")
    b.out("Largest N held in every round with no drop: " +
          ", ".join(f"{c} {largest[c] or 'none'}" for c in contenders) + ".")
    b.out()
    if ratios:
        # At every N: a server that saturates at some N must not win the goal by it.
        for i, what in ((0, "CPU per GiB delivered"), (1, "RSS per listener")):
            cells = "; ".join(f"N = {n}: {b.ratio_cell(ratios[n][i])}" for n in sorted(ratios))
            b.goal("http", f"http: {what}, streamfs ÷ Icecast", cells, "≤ 0.5 at every N",
                   all(b.med(ratios[n][i]) <= 0.5 for n in ratios))
    if 5000 in counts:
        b.goal("http", "http: 5,000 listeners held with no drops", str(largest["streamfs"] or "none"),
               "5000", largest["streamfs"] >= 5000)

    total = (256 if quick else 2048) * b.MiB
    b.out(f"1 → 1: `dd bs=1M` writes {total // b.MiB} MiB into the mount (slow_reader=block, "
          "channel 64 MiB, ring 6 MiB), read by one HTTP GET of the stream (httpload drain, 1 MiB "
          "reads, chunked body decoded) or by `dd bs=1M` on the mount. GB/s from the writer's start "
          "to the reader's end; every run checks all bytes arrived. Ratio = HTTP ÷ mount per round.")
    b.out()
    res = b.run_rounds("http 1 → 1", ["mount", "http"], lambda c: tp_run(b, c, total))
    r = b.per_round_ratios(res["http"], res["mount"], "gbs")
    rows = []
    for c in ("mount", "http"):
        g = [x["gbs"] for x in res[c]]
        rows.append([c, *b.spread(g), b.f2(b.med([x["cpu"] for x in res[c]])),
                     b.ratio_cell(r) if c == "http" else "—"])
    b.table(["reader", "GB/s min", "GB/s median", "GB/s max", "daemon CPU s/GiB", "HTTP ÷ mount"],
            rows, "lrrrrr")
    b.goal("http", "http: 1 → 1, 1 MiB writes, HTTP ÷ mount", b.ratio_cell(r), "≥ 0.5", b.med(r) >= 0.5)
