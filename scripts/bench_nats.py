"""The `nats` scenario of scripts/bench (only with `--only nats`: it needs nats-server):
streams shared by two mounts ("hosts") on a 3-node loopback JetStream cluster with 3
replicas, against the same work through the local engine and through scripts/jsraw.rs (a raw
JetStream publisher -> ordered consumer, the engine's own ceiling). It uses the harness's
helpers (Mount, dd, latency probe, tables, goals) through the module it is given."""

import os
import socket
import subprocess
import time
import urllib.request

MiB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Three nats-server processes under the bench's WORK directory, killed on close."""

    def __init__(self, b):
        self.b = b
        ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
        routes = ", ".join(f"nats-route://127.0.0.1:{r}" for _, r, _ in ports)
        self.procs, self.ports = [], ports
        for i, (port, route, http) in enumerate(ports):
            name = f"n{i + 1}"
            conf = os.path.join(b.WORK, f"nats-{name}.conf")
            with open(conf, "w") as f:
                f.write(f"server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n"
                        f"jetstream {{ store_dir: \"{os.path.join(b.WORK, 'nats-' + name)}\", "
                        "max_memory_store: 2GB }\n"
                        f"cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n")
            log = open(os.path.join(b.WORK, f"nats-{name}.log"), "ab")
            self.procs.append(subprocess.Popen(["nats-server", "-c", conf], stdin=subprocess.DEVNULL,
                                               stdout=log, stderr=log))
        for _, _, http in ports:
            b.wait_until(lambda: self.healthy(http), "the NATS cluster to be ready", 60)

    @staticmethod
    def healthy(http):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2) as r:
                return b'"ok"' in r.read()
        except OSError:
            return False

    def urls(self):
        return ",".join(f"nats://127.0.0.1:{p}" for p, _, _ in self.ports)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


def transfer(b, wpath, rpaths, bs, count, pids):
    """dd writes count × bs into wpath while a dd reads each of rpaths to EOF; once every
    host has applied (or counted as lost) every write, the stream is removed, which ends the
    readers. Returns GB/s delivered per reader, the daemons' CPU s/GiB and the bytes lost."""
    total = b.parse_bs(bs) * count
    readers = [b.dd(b.reader_dd(p)) for p in rpaths]
    for p in set(rpaths):
        b.wait_readers(p, sum(1 for q in rpaths if q == p))
    cpu0 = sum(b.cpu_seconds(pid) for pid in pids)
    t0 = time.monotonic()
    w, _ = b.dd(b.writer_dd(wpath, bs, count))
    if b.reap(w, 600) != 0:
        raise RuntimeError("the writer failed")
    for p in set(rpaths):
        b.wait_until(lambda: b.xnum(p, "writes") + b.xnum(p, "dropped_writes") >= count,
                     "every write applied or counted lost", 120)
    t1 = time.monotonic()
    lost = sum(b.xnum(p, "dropped_bytes") for p in rpaths)
    os.unlink(wpath)
    res = b.wait_procs([r for r, _ in readers], 120, "the readers")
    cpu = sum(b.cpu_seconds(pid) for pid in pids) - cpu0
    if any(rc != 0 for _, rc, _ in res):
        raise RuntimeError("a reader failed")
    got = sum(b.dd_bytes(e) for _, e in readers)
    if got + lost < total * len(rpaths):
        raise RuntimeError(f"readers got {got} bytes and lost {lost} of {total * len(rpaths)}")
    per = got / len(rpaths)
    return dict(gbs=per / (t1 - t0) / 1e9, cpu=cpu / (got / (1 << 30)), lost=lost,
                show=f"{per / (t1 - t0) / 1e9:.3f}" + (f" (lost {lost} B)" if lost else ""))


def jsraw(b, *args):
    exe = os.path.join(os.path.dirname(b.NULLFS), "jsraw")
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"jsraw failed: {r.stderr.strip()}")
    return r.stdout.split()


def latency(b, wpath, rpath):
    count, warmup = b.SZ["lat_count"], b.SZ["lat_warmup"]
    readers, files = b.lat_readers(1, count, warmup, rpath)
    b.wait_ready(readers)
    b.wait_readers(rpath, 1)
    w = b.spawn(b.lat_writer(count, warmup, [wpath]))
    if b.reap(w, count / 1000 * 3 + 60) != 0:
        raise RuntimeError("latency writer failed")
    return b.lat_finish(readers, files, 1, count)


def run(b):
    b.out("## 10. Streams on NATS JetStream: two mounts on a 3-node loopback cluster")
    b.out()
    b.out("Two streamfs mounts stand in for two hosts (`--backend` with the three URLs, "
          "`nats_replicas=3`, memory storage, channel 64 MiB, ring 6 MiB); the writer is on A, "
          "readers on B (and A for fanout). `local` is one mount of the local engine with the same "
          "budgets (writer and readers on it); `raw` is scripts/jsraw.rs doing the same publish "
          "(parts split under the 1 MiB payload limit; one write awaiting its acknowledgement at a "
          "time, as streamfs publishes one stream's writes from one host; `raw ×16`: 16 at a time) "
          "→ ordered consumer on the same cluster, without FUSE. Readers read to EOF (the stream is "
          "removed once every host has applied or counted every write); every run checks that "
          "what the readers got and what was counted lost add up to every byte. A host whose feed "
          "falls more than JetStream's retention (16 MiB here) behind loses writes, counted.")
    b.out()
    cl = Cluster(b)
    mounts = []
    try:
        opts = (f"backend={cl.urls()},nats_replicas=3,channel_buffer_size=64M,"
                "ring_buffer_size=6M")
        a, h = b.Mount("natsA", opts), b.Mount("natsB", opts)
        loc = b.Mount("natsL", "channel_buffer_size=64M,ring_buffer_size=6M")
        mounts = [a, h, loc]
        pids = [a.pid, h.pid]
        rows = []
        quick = b.QUICK
        for bs, count in (("1M", 64 if quick else 256), ("64K", 512 if quick else 2048)):
            def one(c):
                if c == "nats":
                    s = a.stream("tp")
                    b.wait_until(lambda: os.path.exists(os.path.join(h.path, os.path.basename(s))),
                                 "the stream on B", 10)
                    return transfer(b, s, [os.path.join(h.path, os.path.basename(s))], bs, count, pids)
                if c == "local":
                    s = loc.stream("tp")
                    return transfer(b, s, [s], bs, count, [loc.pid])
                window = 16 if c == "raw ×16" else 1
                got, secs = jsraw(b, "tput", cl.urls(), 3, b.parse_bs(bs), count, window)
                g = int(got) / float(secs) / 1e9
                return dict(gbs=g, cpu=float("nan"), lost=0, show=f"{g:.3f}")
            cs = ["nats", "local", "raw", "raw ×16"]
            res = b.run_rounds(f"nats throughput bs={bs}", cs, one)
            for c in cs:
                g = [x["gbs"] for x in res[c]]
                ratio = "—" if c == "nats" else b.ratio_cell(b.per_round_ratios(res["nats"], res[c], "gbs"))
                cpu = [x["cpu"] for x in res[c]]
                lost = sum(x["lost"] for x in res[c])
                rows.append([f"{bs} × {count}" if c == "nats" else "", c, *b.spread(g, lambda x: f"{x:.3f}"),
                             b.f2(b.med(cpu)) if cpu[0] == cpu[0] else "—", b.mb(lost), ratio])
            rr = b.per_round_ratios(res["nats"], res["raw"], "gbs")
            b.goal("nats", f"nats 1 → 1, {bs} writes: streamfs ÷ raw JetStream", b.ratio_cell(rr), "≥ 0.7",
                   b.med(rr) >= 0.7)
        b.out("### Throughput, 1 → 1 (writer on A, reader on B)")
        b.out()
        b.table(["writes", "contender", "GB/s min", "GB/s median", "GB/s max", "daemons' CPU s/GiB",
                 "MiB lost (all rounds)", "nats ÷ this"], rows, "llrrrrrr")

        def lat(c):
            if c == "nats":
                s = a.stream("lat")
                rb = os.path.join(h.path, os.path.basename(s))
                b.wait_until(lambda: os.path.exists(rb), "the stream on B", 10)
                r = latency(b, s, rb)
                os.unlink(s)
                return r
            if c == "local":
                s = loc.stream("lat")
                r = latency(b, s, s)
                os.unlink(s)
                return r
            p50, p99 = jsraw(b, "lat", cl.urls(), 3, b.LAT_SIZE, b.SZ["lat_count"], b.LAT_INTERVAL_US)
            return dict(p50=float(p50), p99=float(p99), show=f"p50 {p50} p99 {p99} µs")
        res = b.run_rounds("nats latency", ["nats", "local", "raw"], lat)
        rows = []
        for c in ("nats", "local", "raw"):
            rows.append([c, *b.spread([x["p50"] for x in res[c]], lambda x: f"{x:.0f}"),
                         f"{b.med([x['p99'] for x in res[c]]):.0f}"])
        b.out(f"### Write-to-read latency ({b.LAT_SIZE}-byte writes every {b.LAT_INTERVAL_US} µs; "
              "writer on A, reader on B)")
        b.out()
        b.table(["contender", "p50 µs min", "p50 µs median", "p50 µs max", "p99 µs median"], rows, "lrrrr")
        rl = b.per_round_ratios(res["nats"], res["raw"], "p50")
        b.goal("nats", "nats latency p50: streamfs ÷ raw JetStream", b.ratio_cell(rl), "≤ 2", b.med(rl) <= 2)

        count = 64 if quick else 256

        def fan(c):
            if c == "nats":
                s = a.stream("fan")
                rb = os.path.join(h.path, os.path.basename(s))
                b.wait_until(lambda: os.path.exists(rb), "the stream on B", 10)
                for pid in pids:
                    b.reset_peak(pid)
                r = transfer(b, s, [s] * 8 + [rb] * 8, "1M", count, pids)
                r["rss"] = [b.peak_rss(pid) for pid in pids]
                return r
            s = loc.stream("fan")
            b.reset_peak(loc.pid)
            r = transfer(b, s, [s] * 16, "1M", count, [loc.pid])
            r["rss"] = [b.peak_rss(loc.pid)]
            return r
        res = b.run_rounds("nats fanout 16", ["nats", "local"], fan)
        rows = []
        for c in ("nats", "local"):
            g = [x["gbs"] * 16 for x in res[c]]
            rss = max(max(x["rss"]) for x in res[c])
            lost = sum(x["lost"] for x in res[c])
            rows.append([c, *b.spread(g, lambda x: f"{x:.3f}"), b.mb(lost), f"{rss / MiB:.0f}"])
        b.out(f"### Fanout 1 → 16 (1 MiB × {count}; nats: 8 readers on A, 8 on B)")
        b.out()
        b.table(["contender", "delivered GB/s min", "median", "max", "MiB lost (all readers, rounds)",
                 "peak RSS MiB (a host)"], rows, "lrrrrr")
        worst = max(max(x["rss"]) for x in res["nats"])
        # Each host's readers queue at most their channel; the ring and 32 MiB on top.
        bound = 6 * MiB + 8 * 64 * MiB + 32 * MiB
        b.goal("nats", "nats RSS per host within ring + readers × channel + 32 MiB",
               f"{worst / MiB:.0f} MiB", f"≤ {bound // MiB} MiB", worst <= bound)
    finally:
        for m in mounts:
            m.close()
        cl.close()
