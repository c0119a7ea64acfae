#!/usr/bin/env python3
"""The harness of scripts/bench. Run `scripts/bench` (it parses the arguments, builds, and
unmounts whatever is left mounted on exit, Ctrl-C or failure); this file reads its settings
from the SFS_* variables that script exports.

Every scenario runs streamfs, its baseline (pipe, tee + FIFOs, a tmpfs file) and, where it
means something, the null filesystem (a fuser daemon that does nothing: the ceiling of any
fuser daemon on this machine) once per round, rotating their order from round to round.
Ratios are taken within a round (runs seconds apart) and reported as median (min-max), so
that a shared machine whose speed drifts still gives comparable numbers. Tables go to stdout
as Markdown; progress goes to stderr.
"""

import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from contextlib import contextmanager

BIN = os.environ["SFS_BIN"]
NULLFS = os.environ["SFS_NULLFS"]
WORK = os.environ["SFS_WORK"]
MODE = os.environ["SFS_MODE"]  # default | quick | soak
SOAK_MIN = float(os.environ.get("SFS_SOAK_MIN") or 0)
QUICK = MODE == "quick"
REPS_GIVEN = int(os.environ.get("SFS_REPS") or 0)
REPS = REPS_GIVEN or (3 if QUICK else 5)
SCENARIOS = ["throughput", "fanout", "latency", "memory", "small", "ring", "late", "hostile", "waiting",
             "start", "http"]
ONLY = [s for s in (os.environ.get("SFS_ONLY") or "").split(",") if s] or list(SCENARIOS)
# Run only when asked for: it needs nats-server (scripts/test installs it).
SCENARIOS.append("nats")
LATENCY = os.path.join(os.path.dirname(NULLFS), "latency")  # cargo example, beside nullfs

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEVNULL = subprocess.DEVNULL
TICK = os.sysconf("SC_CLK_TCK")
os.environ["LC_ALL"] = "C"  # dd's byte counts are parsed

# Sizes per mode. tp: MiB written per write size; fan: MiB written per reader count.
SIZES = {
    "default": dict(
        tp={"1M": 2048, "64K": 2048, "4K": 384},
        fan={1: 1024, 4: 1024, 16: 512, 64: 64},
        stop_n=16, stop_mib=256, stop_window=2.0,
        lat_count=3000, lat_warmup=100,
        mem_mib=10 * 1024, mem_reps=3, idle_streams=100,
        small=200_000,
        late_iters=30,
        host_streams=40, host_small=200_000, host_reps=3,
        wait_counts=[2000, 10000], wait_secs=10.0, wait_kills=5,
        start_opens=200, ts_mib=256,
    ),
    "quick": dict(
        tp={"1M": 256, "64K": 256, "4K": 32},
        fan={1: 256, 4: 128, 16: 64},
        stop_n=16, stop_mib=256, stop_window=1.0,
        lat_count=500, lat_warmup=50,
        mem_mib=1024, mem_reps=3, idle_streams=100,
        small=40_000,
        late_iters=10,
        host_streams=20, host_small=40_000, host_reps=1,
        wait_counts=[2000], wait_secs=3.0, wait_kills=3,
        start_opens=100, ts_mib=64,
    ),
}
SZ = SIZES["quick" if QUICK else "default"]

children = set()
daemon_cpu = [0.0]  # CPU seconds of the daemons this run stopped, for the noise report
mounts = []  # mounts still open, closed on exit
T_START = time.monotonic()


# ---------------------------------------------------------------------------------------------
# Processes.

def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    children.add(p)
    return p


def reap(p, timeout=300.0):
    return wait_procs([p], timeout, " ".join(p.args) if isinstance(p.args, list) else str(p.args))[0][1]


def wait_procs(procs, timeout, what):
    """Waits for each process in turn with a blocking wait4 (Popen.wait with a timeout polls,
    up to 50 ms late). Returns [(monotonic time it was reaped, exit code, CPU seconds)]: the
    last time is when the last of them exited. A timer kills them all after `timeout`
    seconds, which only detects hangs; then this raises."""
    fired = []

    def fire():
        fired.append(True)
        for p in procs:
            if p.returncode is None:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    timer = threading.Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    res = []
    try:
        for p in procs:
            if p.returncode is not None:
                res.append((time.monotonic(), p.returncode, 0.0))
                continue
            _, status, ru = os.wait4(p.pid, 0)
            now = time.monotonic()
            p.returncode = os.waitstatus_to_exitcode(status)
            children.discard(p)
            res.append((now, p.returncode, ru.ru_utime + ru.ru_stime))
    finally:
        timer.cancel()
    if fired:
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
    return res


def kill_all():
    for p in list(children):
        if p.returncode is None:
            try:
                os.kill(p.pid, signal.SIGKILL)  # also ends stopped processes
            except ProcessLookupError:
                pass
    for p in list(children):
        if p.returncode is None:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        children.discard(p)


def on_term(sig, frame):
    raise SystemExit(128 + sig)


signal.signal(signal.SIGTERM, on_term)
# Started in the background by a non-interactive shell, this process inherits SIGINT
# ignored, and so would every reader it starts. Catching it gives children the default back.
signal.signal(signal.SIGINT, signal.default_int_handler)


def out(s=""):
    print(s, flush=True)


def log(s):
    print(f"bench [{time.monotonic() - T_START:5.1f}s] {s}", file=sys.stderr, flush=True)


def wait_until(cond, what, timeout=60.0):
    """Polls `cond`; the timeout only detects hangs."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.002)


@contextmanager
def deadline(secs, what):
    """Raises in the main thread if the block takes longer than `secs` (a hang: a blocked
    read on a stream is interrupted by the signal)."""
    def fire(sig, frame):
        raise RuntimeError(f"timed out after {secs:.0f}s: {what}")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, secs)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------
# /proc and xattrs.

def xa(path, key):
    return os.getxattr(path, "user.streamfs." + key).decode()


def xnum(path, key):
    return int(xa(path, key))


def reader_list(path):
    """[(label, {queued, budget, delivered, dropped_writes, dropped_bytes}, waiting)]"""
    rows = []
    for line in xa(path, "reader_list").splitlines():
        label, _, fields = line.partition("\t")
        rows.append((label, {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)},
                     fields.rstrip().endswith(" waiting")))
    return rows


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB -> bytes
    raise KeyError(key)


def rss(pid):
    return proc_status(pid, "VmRSS")


def peak_rss(pid):
    return proc_status(pid, "VmHWM")


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime of all threads


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it exited between open and read
        return "gone"


def bytes_read_by(pid):
    """rchar of /proc/PID/io: bytes the process got from read() so far (for dd, its input
    plus the few KiB the dynamic loader reads at start)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise KeyError("rchar")


# ---------------------------------------------------------------------------------------------
# Mounts.

def pinned(cpu):
    """Popen keywords that run the child on one CPU (None: wherever the scheduler likes)."""
    if cpu is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {cpu})}


mount_seq = [0]


def forget(m):
    """Takes a mount off the cleanup list, counting its daemon's CPU for the noise report."""
    if m in mounts:
        mounts.remove(m)
    try:
        daemon_cpu[0] += cpu_seconds(m.pid)
    except OSError:
        pass


def remove_mountpoint(path):
    """Removes a mount point directory once nothing is mounted on it (never recursing)."""
    if not os.path.ismount(path):
        try:
            os.rmdir(path)
        except OSError:
            pass


class Mount:
    """A streamfs daemon on a fresh directory under WORK."""

    def __init__(self, name, opts, cpu=None):
        mount_seq[0] += 1
        self.name = f"{name}{mount_seq[0]}"
        self.opts = opts
        self.path = os.path.join(WORK, "mnt-" + self.name)
        self.log = os.path.join(WORK, self.name + ".log")
        os.mkdir(self.path)
        mounts.append(self)
        # The daemon's threads inherit the affinity.
        subprocess.run([BIN, self.path, "-o", opts, "--log-file", self.log], check=True, **pinned(cpu))
        self.pid = int(xa(self.path, "pid"))
        self.seq = 0

    def stream(self, prefix="s"):
        """Creates a fresh stream (as touch does) and returns its path."""
        self.seq += 1
        p = os.path.join(self.path, f"{prefix}{self.seq}")
        with open(p, "ab"):
            pass
        return p

    def close(self):
        kill_all()
        forget(self)
        # With no file open a plain umount ends the daemon at once. (`streamfs stop` waits
        # until the daemon's pid is gone, which takes as long as init takes to reap it:
        # about 2 s in some containers. It remains the fallback, and the shell's trap's.)
        if os.path.ismount(self.path):
            if subprocess.run(["umount", self.path], stderr=DEVNULL).returncode == 0:
                try:
                    wait_until(lambda: proc_state(self.pid) in ("Z", "gone"), "the daemon to exit", 10)
                except RuntimeError:
                    pass
            else:
                r = subprocess.run([BIN, "stop", self.path, "--timeout", "10"], stdout=DEVNULL,
                                   stderr=DEVNULL)
                if r.returncode != 0 and os.path.ismount(self.path):
                    subprocess.run(["umount", "-l", self.path], stderr=DEVNULL)
        remove_mountpoint(self.path)


class NullMount:
    """The null filesystem (scripts/nullfs.rs), served in the foreground by a child process
    until unmounted. Every name is the same file: reads return zeros at once, writes vanish."""

    def __init__(self):
        mount_seq[0] += 1
        self.path = os.path.join(WORK, f"mnt-null{mount_seq[0]}")
        os.mkdir(self.path)
        mounts.append(self)
        self.log = open(os.path.join(WORK, "nullfs.log"), "ab")
        # Not in `children`: kill_all() must leave it running.
        self.proc = subprocess.Popen([NULLFS, self.path], stdin=DEVNULL, stdout=self.log,
                                     stderr=self.log)
        self.pid = self.proc.pid
        wait_until(lambda: os.path.ismount(self.path) or self.proc.poll() is not None,
                   "nullfs to mount", 20)
        if not os.path.ismount(self.path):
            raise RuntimeError(f"nullfs exited with {self.proc.returncode} before mounting")
        self.file = os.path.join(self.path, "null")

    def close(self):
        forget(self)
        if os.path.ismount(self.path):
            if subprocess.run(["umount", self.path], stderr=DEVNULL).returncode != 0:
                subprocess.run(["umount", "-l", self.path], stderr=DEVNULL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        remove_mountpoint(self.path)


NULL = [None]


def null():
    """The run's null filesystem, mounted on first use (it keeps no state)."""
    if NULL[0] is None or NULL[0].proc.poll() is not None:
        NULL[0] = NullMount()
    return NULL[0]


def wait_readers(path, n, what="readers"):
    wait_until(lambda: xnum(path, "readers") == n, f"{n} {what} registered on {os.path.basename(path)}")


def wait_parked(path, n):
    """Until `n` readers of the stream have a read parked (they are blocked in read())."""
    wait_until(lambda: sum(1 for _, _, w in reader_list(path) if w) >= n,
               f"{n} parked reads on {os.path.basename(path)}")


# ---------------------------------------------------------------------------------------------
# Readers, writers.

err_seq = [0]


def dd(args, stdin=None, stdout=DEVNULL, **kw):
    """dd with its report in a file of WORK; returns (Popen, report path)."""
    err_seq[0] += 1
    path = os.path.join(WORK, f"dd{err_seq[0]}.err")
    with open(path, "wb") as f:
        p = spawn(["dd"] + args, stdin=stdin, stdout=stdout, stderr=f, **kw)
    return p, path


def dd_bytes(path):
    """Bytes copied, from dd's final report."""
    with open(path) as f:
        text = f.read()
    os.unlink(path)
    m = re.search(r"^(\d+) bytes", text, re.M)
    if not m:
        raise RuntimeError(f"no byte count in dd's report: {text.strip()!r}")
    return int(m.group(1))


def writer_dd(of, bs, count):
    args = ["if=/dev/zero", f"bs={bs}", f"count={count}", "status=none"]
    if of:
        args.append("of=" + of)
    return args


def reader_dd(src=None, count=None):
    args = ["of=/dev/null", "bs=1M"]
    if src:
        args.append("if=" + src)
    if count is not None:
        args += [f"count={count}", "iflag=fullblock"]
    return args


def stop_self(src, then):
    """A process that opens `src` (a stream registers it as a reader; a FIFO waits for its
    writer), stops itself (SIGSTOP), and would run `then` on it if continued."""
    return spawn(["sh", "-c", f'exec 3<"$1"; kill -STOP $$; exec {then} <&3', "sh", src],
                 stdout=DEVNULL, stderr=DEVNULL)


def parse_bs(bs):
    units = {"K": KiB, "M": MiB}
    return int(bs[:-1]) * units[bs[-1]] if bs[-1] in units else int(bs)


# ---------------------------------------------------------------------------------------------
# Statistics and Markdown.

def med(xs):
    return statistics.median(xs)


def human(n):
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    if n >= MiB:
        return f"{n / MiB:g} MiB"
    if n >= KiB:
        return f"{n / KiB:g} KiB"
    return f"{n} B"


def mb(n):
    return f"{n / MiB:.1f}"


def mb2(n):
    return f"{n / MiB:.2f}"


def f2(x):
    if x != x:  # nan
        return "—"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio_cell(rs):
    """Median of per-round ratios, and their range."""
    rs = [r for r in rs if r == r]
    if not rs:
        return "—"
    return f"**{f2(med(rs))}** ({f2(min(rs))}–{f2(max(rs))})"


def spread(xs, fmt=f2):
    """min, median, max cells."""
    return [fmt(min(xs)), fmt(med(xs)), fmt(max(xs))]


def mdcell(x):
    return str(x).replace("|", "\\|")


def table(headers, rows, align=None):
    align = align or ("l" + "r" * (len(headers) - 1))
    sep = {"l": ":---", "r": "---:", "c": ":---:"}
    out("| " + " | ".join(mdcell(h) for h in headers) + " |")
    out("|" + "|".join(sep[a] for a in align) + "|")
    for r in rows:
        out("| " + " | ".join(mdcell(c) for c in r) + " |")
    out()


def rotate(items, r):
    k = r % len(items)
    return items[k:] + items[:k]


def run_rounds(label, contenders, fn, reps=None):
    """REPS rounds (or `reps`); in round r the contenders run in an order rotated by r.
    Returns {contender: [result per round]}."""
    reps = reps or REPS
    res = {c: [] for c in contenders}
    for r in range(reps):
        order = rotate(contenders, r)
        note = []
        for c in order:
            v = fn(c)
            res[c].append(v)
            if isinstance(v, dict) and "show" in v:
                note.append(f"{c} {v['show']}")
        log(f"{label} round {r + 1}/{reps}: " + ", ".join(note))
    return res


def per_round_ratios(a, b, key, invert=False):
    """Ratio streamfs/baseline of each round (results of the same round pair up)."""
    out_ = []
    for x, y in zip(a, b):
        num, den = (y[key], x[key]) if invert else (x[key], y[key])
        out_.append(num / den if den else float("nan"))
    return out_


GOALS = []  # (scenario, goal, measured, target, met: True/False/None)


def goal(scenario, text, measured, target, met):
    GOALS.append((scenario, text, measured, target, met))


# ---------------------------------------------------------------------------------------------
# 1. Throughput: 1 writer -> 1 reader.

TP_OPTS = "channel_buffer_size=64M,ring_buffer_size=6M,slow_reader=block"


def tp_streamfs(bs, count, total):
    m = Mount("tp", TP_OPTS)
    try:
        s = m.stream("tp")
        r, rerr = dd(reader_dd(s))
        wait_readers(s, 1)
        wait_parked(s, 1)
        cpu0 = cpu_seconds(m.pid)
        t0 = time.monotonic()
        w, _ = dd(writer_dd(s, bs, count))
        [(tw, rc, _)] = wait_procs([w], 300, "the stream writer")
        if rc != 0:
            raise RuntimeError(f"stream writer exited {rc}")
        written = xnum(s, "bytes_written")
        dropped = xnum(s, "dropped_bytes")
        os.unlink(s)  # the reader gets EOF once it has read its queue
        [(t1, rc, _)] = wait_procs([r], 300, "the stream reader")
        cpu = cpu_seconds(m.pid) - cpu0
        if rc != 0:
            raise RuntimeError(f"stream reader exited {rc}")
        got = dd_bytes(rerr)
        if written != total or dropped != 0 or got != total:
            raise RuntimeError(f"slow_reader=block run lost data: wrote {written} of {total}, "
                               f"dropped {dropped}, reader got {got}")
        return dict(gbs=got / (t1 - t0) / 1e9, cpu=cpu / (got / GiB),
                    show=f"{got / (t1 - t0) / 1e9:.2f}")
    finally:
        m.close()


def tp_pipe(bs, count, total):
    rfd, wfd = os.pipe()
    r, rerr = dd(reader_dd(), stdin=rfd)
    os.close(rfd)
    t0 = time.monotonic()
    w, _ = dd(writer_dd(None, bs, count), stdout=wfd)
    os.close(wfd)
    res = wait_procs([w, r], 300, "the pipe")
    if any(rc != 0 for _, rc, _ in res):
        raise RuntimeError("pipe run failed")
    got = dd_bytes(rerr)
    t1 = res[-1][0]
    if got != total:
        raise RuntimeError(f"pipe reader got {got} of {total}")
    return dict(gbs=got / (t1 - t0) / 1e9, cpu=float("nan"), show=f"{got / (t1 - t0) / 1e9:.2f}")


def tp_null(bs, count, total):
    n = null()
    cpu0 = cpu_seconds(n.pid)
    t0 = time.monotonic()
    w, _ = dd(writer_dd(n.file, bs, count))
    r, rerr = dd(reader_dd(n.file, total // MiB))
    res = wait_procs([w, r], 300, "the nullfs writer and reader")
    cpu = cpu_seconds(n.pid) - cpu0
    if any(rc != 0 for _, rc, _ in res):
        raise RuntimeError("nullfs run failed")
    got = dd_bytes(rerr)
    t1 = max(t for t, _, _ in res)
    return dict(gbs=got / (t1 - t0) / 1e9, cpu=cpu / (got / GiB), show=f"{got / (t1 - t0) / 1e9:.2f}")


def scenario_throughput():
    out("## 1. Throughput: 1 writer → 1 reader")
    out()
    out("Writer `dd if=/dev/zero bs=B`, reader `dd of=/dev/null bs=1M`, on every contender: a "
        "stream (slow_reader=block, so lossless like a pipe; channel 64 MiB, ring 6 MiB; a fresh "
        "daemon per run; every run checks that all bytes arrived and none were dropped), a pipe, "
        "and the null filesystem (writer and reader on its one file at once). "
        "GB/s = 1e9 bytes the reader got / (writer start → reader EOF). "
        "Ratio = streamfs ÷ this contender, per round, **median** (min–max): **> 1 means streamfs "
        "is faster**. CPU s/GiB: daemon CPU time per GiB delivered.")
    out()
    rows = []
    names = {"streamfs": "streamfs", "pipe": "pipe", "null": "null ceiling"}
    for bs in ("1M", "64K", "4K"):
        total = SZ["tp"][bs] * MiB
        count = total // parse_bs(bs)
        fns = {"streamfs": tp_streamfs, "pipe": tp_pipe, "null": tp_null}
        res = run_rounds(f"throughput bs={bs}", list(fns), lambda c: fns[c](bs, count, total))
        size = f"{human(parse_bs(bs))} × {count}"
        for c in ("streamfs", "pipe", "null"):
            g = [x["gbs"] for x in res[c]]
            cpu = [x["cpu"] for x in res[c]]
            ratio = "—" if c == "streamfs" else ratio_cell(per_round_ratios(res["streamfs"], res[c], "gbs"))
            rows.append([size if c == "streamfs" else "", names[c], *spread(g),
                         f2(med(cpu)) if cpu[0] == cpu[0] else "—", ratio])
        rp = per_round_ratios(res["streamfs"], res["pipe"], "gbs")
        rn = per_round_ratios(res["streamfs"], res["null"], "gbs")
        if bs == "1M":
            goal("throughput", "1 → 1, 1 MiB writes: streamfs ÷ pipe", ratio_cell(rp), "≥ 2", med(rp) >= 2)
            goal("throughput", "1 → 1, 1 MiB writes: streamfs ÷ null ceiling", ratio_cell(rn), "≥ 0.8",
                 med(rn) >= 0.8)
        elif bs == "64K":
            goal("throughput", "1 → 1, 64 KiB writes: streamfs ÷ null ceiling", ratio_cell(rn), "≥ 0.8",
                 med(rn) >= 0.8)
    table(["writes", "contender", "GB/s min", "GB/s median", "GB/s max", "CPU s/GiB",
           "streamfs ÷ this"], rows, "llrrrrr")


# ---------------------------------------------------------------------------------------------
# 2. Fanout: 1 writer -> N readers.

FAN_OPTS = "channel_buffer_size=64M,ring_buffer_size=6M"


def fan_streamfs(n, mib, stop_one=False):
    m = Mount("fan", FAN_OPTS)
    try:
        s = m.stream("fan")
        readers = [dd(reader_dd(s)) for _ in range(n - 1 if stop_one else n)]
        stopped = stop_self(s, "dd of=/dev/null bs=1M") if stop_one else None
        wait_readers(s, n)
        wait_parked(s, len(readers))
        if stopped:
            wait_until(lambda: proc_state(stopped.pid) == "T", "the reader to stop itself")
        cpu0 = cpu_seconds(m.pid)
        t0 = time.monotonic()
        w, _ = dd(writer_dd(s, "1M", mib))
        [(tw, rc, _)] = wait_procs([w], 300, "the stream writer")
        if rc != 0:
            raise RuntimeError(f"stream writer exited {rc}")
        written = xnum(s, "bytes_written")
        dropped = xnum(s, "dropped_bytes")
        stopped_drop = 0
        if stopped:
            rl = reader_list(s)
            stopped_drop = sum(f["dropped_bytes"] for lab, f, _ in rl if f"pid {stopped.pid} " in lab + " ")
        os.unlink(s)
        res = wait_procs([p for p, _ in readers], 300, "the stream readers")
        t1 = res[-1][0]
        cpu = cpu_seconds(m.pid) - cpu0
        if any(rc != 0 for _, rc, _ in res):
            raise RuntimeError("a stream reader failed")
        got = sum(dd_bytes(e) for _, e in readers)
        if written != mib * MiB:
            raise RuntimeError(f"the writer wrote {written} of {mib * MiB} bytes")
        if not stopped and got != written * n - dropped:
            raise RuntimeError(f"readers got {got} bytes; written × N − dropped = {written * n - dropped}")
        return dict(agg=got / (t1 - t0) / 1e9, wr=written / (tw - t0) / 1e9,
                    drop=100.0 * dropped / (written * n), cpu=cpu / (got / GiB) if got else float("nan"),
                    stopped_drop=100.0 * stopped_drop / written, complete=True,
                    show=f"{got / (t1 - t0) / 1e9:.2f} agg, {written / (tw - t0) / 1e9:.2f} writer")
    finally:
        m.close()


def make_fifos(n):
    d = tempfile.mkdtemp(prefix="fifos.", dir=WORK)
    paths = [os.path.join(d, f"f{i}") for i in range(n)]
    for p in paths:
        os.mkfifo(p)
    return d, paths


def remove_fifos(d, paths):
    for p in paths:
        os.unlink(p)
    os.rmdir(d)


def fan_tee(n, mib, stop_one=False, window=None):
    d, fifos = make_fifos(n)
    try:
        readers = [dd(reader_dd(f)) for f in (fifos[1:] if stop_one else fifos)]
        stopped = stop_self(fifos[0], "dd of=/dev/null bs=1M") if stop_one else None
        rfd, wfd = os.pipe()
        t0 = time.monotonic()
        tee = spawn(["tee"] + fifos, stdin=rfd, stdout=DEVNULL)
        w, _ = dd(writer_dd(None, "1M", mib), stdout=wfd)
        os.close(rfd)
        os.close(wfd)
        if stop_one:
            # tee stalls on the stopped reader's full FIFO: give it `window` seconds (this
            # sleep is the measurement), then count what its running readers got.
            time.sleep(window)
            through = med([bytes_read_by(p.pid) for p, _ in readers])
            done = w.poll() is not None
            kill_all()
            return dict(wr=through / window / 1e9, through=through, complete=done,
                        show=f"{'completed' if done else 'stalled'} after {through / MiB:.2f} MiB")
        [(tw, rc, _)] = wait_procs([w], 300, "the tee writer")
        res = wait_procs([tee] + [p for p, _ in readers], 300, "tee and its readers")
        t1 = res[-1][0]
        if rc != 0 or any(c != 0 for _, c, _ in res):
            raise RuntimeError("tee run failed")
        got = sum(dd_bytes(e) for _, e in readers)
        if got != n * mib * MiB:
            raise RuntimeError(f"tee readers got {got} of {n * mib * MiB} bytes")
        cpu = res[0][2]
        return dict(agg=got / (t1 - t0) / 1e9, wr=mib * MiB / (tw - t0) / 1e9, drop=0.0,
                    cpu=cpu / (got / GiB), show=f"{got / (t1 - t0) / 1e9:.2f} agg, "
                    f"{mib * MiB / (tw - t0) / 1e9:.2f} writer")
    finally:
        kill_all()
        remove_fifos(d, fifos)


def fan_null(n, mib):
    nm = null()
    cpu0 = cpu_seconds(nm.pid)
    t0 = time.monotonic()
    w, _ = dd(writer_dd(nm.file, "1M", mib))
    readers = [dd(reader_dd(nm.file, mib)) for _ in range(n)]
    [(tw, rc, _)] = wait_procs([w], 300, "the nullfs writer")
    res = wait_procs([p for p, _ in readers], 300, "the nullfs readers")
    t1 = max(tw, res[-1][0])
    cpu = cpu_seconds(nm.pid) - cpu0
    if rc != 0 or any(c != 0 for _, c, _ in res):
        raise RuntimeError("nullfs run failed")
    got = sum(dd_bytes(e) for _, e in readers)
    return dict(agg=got / (t1 - t0) / 1e9, wr=mib * MiB / (tw - t0) / 1e9, drop=0.0,
                cpu=cpu / (got / GiB), show=f"{got / (t1 - t0) / 1e9:.2f} agg, "
                f"{mib * MiB / (tw - t0) / 1e9:.2f} writer")


def scenario_fanout():
    out("## 2. Fanout: 1 writer → N readers")
    out()
    out("Writer `dd if=/dev/zero bs=1M`, N readers `dd of=/dev/null bs=1M`. streamfs: one stream, "
        "default policy slow_reader=drop (a slow reader loses data, the writer never waits), "
        "channel 64 MiB, ring 6 MiB, fresh daemon per run; tee: `dd | tee FIFO1 … FIFON "
        ">/dev/null`, each FIFO read by the same dd; null ceiling: N readers and the writer on "
        "nullfs at once. Delivered GB/s = bytes all readers got / (writer start → last reader "
        "done); writer GB/s = bytes written / the writer's own run time. Dropped = share of "
        "written × N lost to drops (streamfs only; the others are lossless). CPU s/GiB = CPU time "
        "of the streamfs daemon / tee / the nullfs daemon per GiB delivered. Ratios: streamfs ÷ "
        "this, per round, **median** (min–max); **> 1 means streamfs is faster**.")
    fan = SZ["fan"]
    if QUICK:
        out()
        out(f"*Quick mode: N = 64 is left out; sizes are smaller ({', '.join(f'N={k}: {v} MiB' for k, v in fan.items())}).*")
    elif any(v != 1024 for v in fan.values()):
        out()
        out("*Bytes written per N are in the table: N = 16 and 64 write less than 1 GiB so that "
            "the default run stays at a few minutes (`tee` into 64 FIFOs moves 64 × the writer's "
            "bytes through 8 KiB writes).*")
    out()
    rows = []
    names = {"streamfs": "streamfs", "tee": f"tee + FIFOs", "null": "null ceiling"}
    writer_rate = {}
    for n, mib in fan.items():
        fns = {"streamfs": lambda: fan_streamfs(n, mib), "tee": lambda: fan_tee(n, mib),
               "null": lambda: fan_null(n, mib)}
        res = run_rounds(f"fanout N={n}", list(fns), lambda c: fns[c]())
        writer_rate[n] = med([x["wr"] for x in res["streamfs"]])
        for c in ("streamfs", "tee", "null"):
            a = [x["agg"] for x in res[c]]
            ra = "—" if c == "streamfs" else ratio_cell(per_round_ratios(res["streamfs"], res[c], "agg"))
            rw = "—" if c == "streamfs" else ratio_cell(per_round_ratios(res["streamfs"], res[c], "wr"))
            drop = f"{med([x['drop'] for x in res[c]]):.1f} %" if c == "streamfs" else "0"
            rows.append([f"{n}" if c == "streamfs" else "", f"{mib} MiB" if c == "streamfs" else "",
                         names[c], *spread(a), f2(med([x["wr"] for x in res[c]])), drop,
                         f2(med([x["cpu"] for x in res[c]])), ra, rw])
        if n == 16:
            rt = per_round_ratios(res["streamfs"], res["tee"], "agg")
            rn = per_round_ratios(res["streamfs"], res["null"], "agg")
            goal("fanout", "fanout N = 16, delivered: streamfs ÷ tee + FIFOs", ratio_cell(rt), "≥ 1.5",
                 med(rt) >= 1.5)
            goal("fanout", "fanout N = 16, delivered: streamfs ÷ null ceiling", ratio_cell(rn), "≥ 0.7",
                 med(rn) >= 0.7)
    table(["N", "written", "contender", "delivered GB/s min", "median", "max", "writer GB/s",
           "dropped", "CPU s/GiB", "streamfs ÷ this, delivered", "streamfs ÷ this, writer"],
          rows, "rrlrrrrrrrr")

    # A stopped reader.
    n, mib, window = SZ["stop_n"], SZ["stop_mib"], SZ["stop_window"]
    out(f"### A stopped reader (N = {n}, {mib} MiB, one reader SIGSTOPped right after it opened)")
    out()
    out(f"streamfs: a run as above with one of the {n} readers stopped, next to the same run with "
        f"none stopped in the same round; the writer must finish at full speed (the stopped "
        f"reader's channel fills, then it loses data). tee: the same; tee blocks on the stopped "
        f"reader's full FIFO, and so do the writer and every other reader. The tee run is given "
        f"{window:g} s, then killed; its 'writer GB/s' is what its running readers got in that "
        f"time / {window:g} s. Ratio: writer GB/s ÷ streamfs's with no reader stopped, per round "
        f"(**≥ 0.8 counts as not held back**).")
    out()
    fns = {"streamfs, 1 stopped": lambda: fan_streamfs(n, mib, stop_one=True),
           "streamfs, none stopped": lambda: fan_streamfs(n, mib),
           "tee + FIFOs, 1 stopped": lambda: fan_tee(n, mib, stop_one=True, window=window)}
    res = run_rounds(f"stopped reader N={n}", list(fns), lambda c: fns[c]())
    base = res["streamfs, none stopped"]
    rows = []
    for c in fns:
        wr = [x["wr"] for x in res[c]]
        ratio = "—" if c == "streamfs, none stopped" else ratio_cell(per_round_ratios(res[c], base, "wr"))
        if c == "streamfs, 1 stopped":
            done = sum(1 for x in res[c] if x["complete"])
            outcome = (f"wrote all {mib} MiB in {done}/{REPS} rounds; the stopped reader lost "
                       f"{med([x['stopped_drop'] for x in res[c]]):.0f} % of the bytes")
        elif c == "tee + FIFOs, 1 stopped":
            stalled = sum(1 for x in res[c] if not x["complete"])
            outcome = (f"stalled in {stalled}/{REPS} rounds after "
                       f"{med([x['through'] for x in res[c]]) / MiB:.2f} MiB (median) of {mib} MiB")
        else:
            outcome = f"wrote all {mib} MiB"
        rows.append([c, *spread(wr, lambda v: f"{v:.3f}" if v < 0.1 else f2(v)), ratio, outcome])
    table(["contender", "writer GB/s min", "median", "max", "÷ streamfs none stopped", "outcome"],
          rows, "lrrrrl")
    rs = per_round_ratios(res["streamfs, 1 stopped"], base, "wr")
    done = sum(1 for x in res["streamfs, 1 stopped"] if x["complete"])
    stalled = sum(1 for x in res["tee + FIFOs, 1 stopped"] if not x["complete"])
    goal("fanout", f"fanout N = {n}: writer not held back by a stopped reader (writer GB/s ÷ none stopped)",
         f"{ratio_cell(rs)}; completed {done}/{REPS}; tee stalled {stalled}/{REPS}",
         "completes, ≥ 0.8", done == REPS and med(rs) >= 0.8)


# ---------------------------------------------------------------------------------------------
# 3. Latency.

LAT_SIZE, LAT_INTERVAL_US = 64, 1000


def lat_reader(count, warmup, out_file, source):
    return [LATENCY, "read", str(count), str(warmup), str(LAT_SIZE), out_file, source]


def lat_writer(count, warmup, targets):
    return [LATENCY, "write", str(count), str(warmup), str(LAT_INTERVAL_US), str(LAT_SIZE)] + targets


def lat_collect(files, n, count):
    lat = []
    bad = 0
    for f in files:
        a = array("q")
        with open(f, "rb") as fh:
            a.frombytes(fh.read())
        os.unlink(f)
        if sys.byteorder != "little":
            a.byteswap()
        bad += a[0]
        lat.extend(a[1:])
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, max(0, int(q * len(lat) + 0.999999) - 1))] / 1000.0

    return dict(p50=pct(0.50), p99=pct(0.99), p999=pct(0.999), max=lat[-1] / 1000.0,
                lost=bad, show=f"p50 {pct(0.5):.0f} p99 {pct(0.99):.0f} µs")


def lat_readers(n, count, warmup, source, cpu=None):
    files = [os.path.join(WORK, f"lat{i}.bin") for i in range(n)]
    readers = [spawn(lat_reader(count, warmup, files[i], source), stdout=subprocess.PIPE, **pinned(cpu))
               for i in range(n)]
    return readers, files


def wait_ready(readers):
    for p in readers:
        line = p.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError("a latency reader did not start")


def lat_finish(readers, files, n, count):
    """Waits for the readers (the writer has sent its last message) and collects their logs."""
    res = wait_procs(readers, 60, "the latency readers")
    if any(rc != 0 for _, rc, _ in res):
        raise RuntimeError("a latency reader failed")
    for p in readers:
        p.stdout.close()
    return lat_collect(files, n, count)


def lat_streamfs(n, count, warmup, cpu=None):
    m = Mount("lat", "channel_buffer_size=6M,ring_buffer_size=6M", cpu)
    try:
        s = m.stream("lat")
        readers, files = lat_readers(n, count, warmup, s, cpu)
        wait_ready(readers)
        wait_readers(s, n)
        wait_parked(s, n)
        w = spawn(lat_writer(count, warmup, [s]), **pinned(cpu))
        if reap(w, count / 1000 * 3 + 60) != 0:
            raise RuntimeError("latency writer failed")
        os.unlink(s)
        return lat_finish(readers, files, n, count)
    finally:
        m.close()


def lat_pipe(n, count, warmup, cpu=None):
    pipes = [os.pipe() for _ in range(n)]
    files = [os.path.join(WORK, f"lat{i}.bin") for i in range(n)]
    readers = [spawn(lat_reader(count, warmup, files[i], f"fd:{pipes[i][0]}"), stdout=subprocess.PIPE,
                     pass_fds=[pipes[i][0]], **pinned(cpu)) for i in range(n)]
    for r, _ in pipes:
        os.close(r)
    try:
        wait_ready(readers)
        wfds = [w for _, w in pipes]
        w = spawn(lat_writer(count, warmup, [f"fd:{fd}" for fd in wfds]), pass_fds=wfds, **pinned(cpu))
        for fd in wfds:
            os.close(fd)
        if reap(w, count / 1000 * 3 + 60) != 0:
            raise RuntimeError("latency writer failed")
        return lat_finish(readers, files, n, count)
    finally:
        kill_all()


def scenario_latency():
    count, warmup = SZ["lat_count"], SZ["lat_warmup"]
    out("## 3. Latency: 64-byte messages every 1 ms")
    out()
    out(f"`scripts/latency.rs` (a cargo example): the writer sends {count} messages of "
        f"{LAT_SIZE} bytes (after {warmup} unrecorded warm-up ones) on an absolute 1 ms schedule, each "
        "carrying CLOCK_MONOTONIC at send; every reader takes the clock when its read returns and "
        "records receive time − send time for each message in it (the same programs for both "
        "contenders). streamfs: all readers open the stream and block in read() before the writer "
        "starts (default policy, channel 6 MiB); pipe: one pipe per reader, the writer writes each "
        "message into every pipe in turn (as tee would) after taking one timestamp. Percentiles "
        "over all readers' messages of a round; each cell is the **median** over rounds (min–max). "
        "**Lower is better**; the ratio is streamfs p50 ÷ pipe p50 (goal ≤ 4). CPUs: 'any' as "
        "users run it; '1': daemon, writer and reader all pinned to one CPU. A pipe write wakes its "
        "reader with a synchronous wake-up that pulls it onto the writer's CPU; FUSE's request and "
        "reply wake-ups do not, so unpinned a message usually crosses CPUs, which costs 10-30 µs "
        "on this VM. The '1' rows compare the two transports without that.")
    out()
    rows = []
    last_cpu = (os.cpu_count() or 1) - 1
    for n, cpu in ((1, None), (1, last_cpu), (16, None)):
        fns = {"streamfs": lat_streamfs, "pipe": lat_pipe}
        where = "any" if cpu is None else "1"
        res = run_rounds(f"latency {n} reader(s), CPUs {where}", list(fns),
                         lambda c: fns[c](n, count, warmup, cpu))

        def cell(c, k):
            xs = [x[k] for x in res[c]]
            return f"**{med(xs):.0f}** ({min(xs):.0f}–{max(xs):.0f})"

        for c in ("streamfs", "pipe"):
            lost = sum(x["lost"] for x in res[c])
            rows.append([f"{n}" if c == "streamfs" else "", where if c == "streamfs" else "", c,
                         cell(c, "p50"), cell(c, "p99"),
                         cell(c, "p999"), f"{med([x['max'] for x in res[c]]):.0f}", str(lost),
                         ratio_cell(per_round_ratios(res["streamfs"], res["pipe"], "p50"))
                         if c == "pipe" else "—"])
        rp = per_round_ratios(res["streamfs"], res["pipe"], "p50")
        goal("latency", f"latency, {n} reader{'s' if n > 1 else ''}, CPUs {where}: p50 streamfs ÷ pipe",
             ratio_cell(rp), "≤ 4", med(rp) <= 4)
        if n == 16:
            p99 = med([x["p99"] for x in res["streamfs"]])
            goal("latency", "latency, 16 readers: streamfs p99", f"{p99:.0f} µs (pipe "
                 f"{med([x['p99'] for x in res['pipe']]):.0f} µs)", "< 100 µs (idle machine)", p99 < 100)
    table(["readers", "CPUs", "contender", "p50 µs", "p99 µs", "p99.9 µs", "max µs",
           "lost msgs (all rounds)", "streamfs p50 ÷ pipe p50"], rows, "rllrrrrrr")


# ---------------------------------------------------------------------------------------------
# 4. Memory.

def mem_fanout(mib, chan, ring, nread):
    m = Mount("mem", f"channel_buffer_size={chan},ring_buffer_size={ring}")
    try:
        s = m.stream("mem")
        readers = [dd(reader_dd(s)) for _ in range(nread)]
        wait_readers(s, nread)
        wait_parked(s, nread)
        before = rss(m.pid)
        reset_peak(m.pid)
        w, _ = dd(writer_dd(s, "1M", mib))
        if reap(w, 600) != 0:
            raise RuntimeError("memory writer failed")
        end = rss(m.pid)
        peak = peak_rss(m.pid)
        written = xnum(s, "bytes_written")
        dropped = xnum(s, "dropped_bytes")
        os.unlink(s)
        res = wait_procs([p for p, _ in readers], 300, "the memory readers")
        for _, e in readers:
            dd_bytes(e)
        if any(rc != 0 for _, rc, _ in res):
            raise RuntimeError("a memory reader failed")
        return dict(before=before, end=end, peak=peak, drop=100.0 * dropped / (written * nread),
                    show=f"peak {peak / MiB:.1f} MiB")
    finally:
        m.close()


def mem_idle(nstreams):
    m = Mount("idle", "channel_buffer_size=6M,ring_buffer_size=6M")
    try:
        streams = [m.stream("idle") for _ in range(nstreams)]
        for s in streams:  # the same xattr queries as below, before measuring
            reader_list(s)
        before = rss(m.pid)
        readers = [spawn(["cat", s], stdout=DEVNULL) for s in streams for _ in range(2)]
        wait_until(lambda: xnum(m.path, "readers") == 2 * nstreams, f"{2 * nstreams} idle readers")
        for s in streams:
            wait_parked(s, 2)
        after = rss(m.pid)
        for s in streams:
            os.unlink(s)
        res = wait_procs(readers, 60, "the idle readers")
        if any(rc != 0 for _, rc, _ in res):
            raise RuntimeError("an idle reader failed")
        per = (after - before) / (2 * nstreams)
        return dict(before=before, after=after, per=per, show=f"{per:.0f} B/reader")
    finally:
        m.close()


def scenario_memory():
    mib = SZ["mem_mib"]
    chan = ring = 6 * MiB
    nread = 16
    bound = ring + nread * chan + 16 * MiB
    reps = REPS_GIVEN or SZ["mem_reps"]
    out("## 4. Memory")
    out()
    out(f"(a) One stream, channel 6 MiB and ring 6 MiB (default policy, drop), {nread} readers "
        f"`dd of=/dev/null bs=1M`, a writer `dd bs=1M` writes {human(mib * MiB)}; daemon VmRSS "
        f"before the writer and after it, and VmHWM (peak) over the run; a fresh daemon per "
        f"round, {reps} rounds. Bound = ring + {nread} × channel + 16 MiB = {bound // MiB} MiB (goal: RSS within "
        f"it; the peak is compared). **Lower is better**.")
    out()
    res = run_rounds("memory (a)", ["streamfs"], lambda c: mem_fanout(mib, chan, ring, nread), reps)["streamfs"]
    rows = [["daemon RSS before the writer (MiB)", *spread([x["before"] for x in res], mb), "", ""],
            [f"daemon RSS after {human(mib * MiB)} (MiB)", *spread([x["end"] for x in res], mb),
             f"{bound // MiB}", f2(med([x["end"] / bound for x in res]))],
            ["daemon peak RSS, VmHWM (MiB)", *spread([x["peak"] for x in res], mb), f"{bound // MiB}",
             f2(med([x["peak"] / bound for x in res]))],
            ["bytes dropped for slow readers (%)", *spread([x["drop"] for x in res]), "", ""]]
    table(["measure", "min", "median", "max", "bound MiB", "median ÷ bound"], rows, "lrrrrr")
    peak = med([x["peak"] for x in res])
    goal("memory", f"memory: peak RSS, {nread} readers, {human(mib * MiB)} written", f"{peak / MiB:.1f} MiB "
         f"= {f2(peak / bound)} × bound", f"≤ {bound // MiB} MiB (ring + {nread} × channel + 16 MiB)",
         peak <= bound)

    ns = SZ["idle_streams"]
    out(f"(b) {ns} streams, {2 * ns} idle readers (`cat`, 2 per stream, each blocked in read(): "
        f"its read parked in the daemon). Per idle reader = (RSS with the readers − RSS before "
        f"they opened) / {2 * ns}. **Lower is better**; goal < 16 KiB.")
    out()
    res = run_rounds("memory (b)", ["streamfs"], lambda c: mem_idle(ns))["streamfs"]
    rows = [["daemon RSS before the readers (MiB)", *spread([x["before"] for x in res], mb)],
            [f"daemon RSS with {2 * ns} idle readers (MiB)", *spread([x["after"] for x in res], mb)],
            ["bytes of RSS per idle reader", *spread([x["per"] for x in res], lambda v: f"{v:.0f}")]]
    table(["measure", "min", "median", "max"], rows, "lrrr")
    per = med([x["per"] for x in res])
    goal("memory", "memory: RSS per idle reader", f"{per:.0f} B", "< 16384 B", per < 16 * KiB)


# ---------------------------------------------------------------------------------------------
# 5. Small writes.

SMALL_CHAN = SMALL_RING = 1 * MiB


def small_streamfs(count):
    m = Mount("small", f"channel_buffer_size={SMALL_CHAN},ring_buffer_size={SMALL_RING}")
    try:
        s = m.stream("small")
        live = spawn(["cat", s], stdout=DEVNULL)
        stopped = stop_self(s, "cat")
        wait_readers(s, 2)
        wait_until(lambda: proc_state(stopped.pid) == "T", "the reader to stop itself")
        wait_parked(s, 1)
        before = rss(m.pid)
        reset_peak(m.pid)
        t0 = time.monotonic()
        w, _ = dd(writer_dd(s, 16, count))
        [(tw, rc, _)] = wait_procs([w], 300, "the small writer")
        if rc != 0:
            raise RuntimeError("small writer failed")
        peak = peak_rss(m.pid)
        rl = {lab: f for lab, f, _ in reader_list(s)}
        q = [f["queued"] for lab, f in rl.items() if f"pid {stopped.pid} " in lab + " "]
        dw = [f["dropped_writes"] for lab, f in rl.items() if f"pid {stopped.pid} " in lab + " "]
        ring_b = xnum(s, "ring_bytes")
        os.unlink(s)
        wait_procs([live], 60, "the live reader")
        return dict(rate=count / (tw - t0), growth=peak - before, queued=q[0] if q else 0,
                    ring=ring_b, drop=100.0 * (dw[0] if dw else 0) / count,
                    show=f"{count / (tw - t0) / 1000:.0f}k/s")
    finally:
        m.close()


def small_pipe(count):
    rfd, wfd = os.pipe()
    r = spawn(["cat"], stdin=rfd, stdout=DEVNULL)
    os.close(rfd)
    t0 = time.monotonic()
    w, _ = dd(writer_dd(None, 16, count), stdout=wfd)
    os.close(wfd)
    res = wait_procs([w, r], 300, "the small pipe")
    if any(rc != 0 for _, rc, _ in res):
        raise RuntimeError("small pipe run failed")
    return dict(rate=count / (res[0][0] - t0), show=f"{count / (res[0][0] - t0) / 1000:.0f}k/s")


def small_null(count):
    n = null()
    t0 = time.monotonic()
    w, _ = dd(writer_dd(n.file, 16, count))
    [(tw, rc, _)] = wait_procs([w], 300, "the small nullfs writer")
    if rc != 0:
        raise RuntimeError("small nullfs writer failed")
    return dict(rate=count / (tw - t0), show=f"{count / (tw - t0) / 1000:.0f}k/s")


def scenario_small():
    count = SZ["small"]
    out("## 5. Small writes: 16 bytes each")
    out()
    out(f"`dd if=/dev/zero bs=16 count={count}` as fast as it goes. streamfs: one stream with one "
        f"live reader (`cat`) and one SIGSTOPped reader, channel {human(SMALL_CHAN)}, ring "
        f"{human(SMALL_RING)}; pipe: into `cat`; null ceiling: into nullfs. Writes/s = writes / "
        f"the writer's run time. Ratios: streamfs ÷ this, per round, **median** (min–max); **> 1 "
        f"means streamfs is faster**.")
    out()
    fns = {"streamfs": small_streamfs, "pipe": small_pipe, "null": small_null}
    res = run_rounds("small writes", list(fns), lambda c: fns[c](count))
    rows = []
    for c, name in (("streamfs", "streamfs"), ("pipe", "pipe"), ("null", "null ceiling")):
        rows.append([name, *spread([x["rate"] / 1000 for x in res[c]], lambda v: f"{v:.0f}k"),
                     "—" if c == "streamfs" else ratio_cell(per_round_ratios(res["streamfs"], res[c], "rate"))])
    table(["contender", "writes/s min", "median", "max", "streamfs ÷ this"], rows, "lrrrr")
    s = res["streamfs"]
    bound = SMALL_RING + 2 * SMALL_CHAN
    out(f"Budgets under 16-byte writes. Budgets count data bytes; small writes share 16 KiB "
        f"blocks, each write costing a 16-byte boundary record in the ring (charged to the pool "
        f"as 32), and a reader's queue is runs of consecutive writes. **Lower is better**; a "
        f"budget holds when its value stays at or under it.")
    out()
    rows = [["daemon RSS growth, peak − before the writer (MiB)", *spread([x["growth"] for x in s], mb2),
             f"{mb2(bound)} (ring + 2 × channel)"],
            ["stopped reader's queued bytes (MiB)", *spread([x["queued"] for x in s], mb2),
             f"{mb2(SMALL_CHAN)} (channel)"],
            ["ring data (MiB)", *spread([x["ring"] for x in s], mb2), f"{mb2(SMALL_RING)} (ring)"],
            ["writes dropped for the stopped reader (%)", *spread([x["drop"] for x in s]), ""]]
    table(["measure", "min", "median", "max", "budget"], rows, "lrrrl")
    g = max(x["growth"] for x in s)
    q = max(x["queued"] for x in s)
    goal("small", "16-byte writes: daemon RSS growth (max over rounds)", f"{g / MiB:.2f} MiB; stopped "
         f"reader's queue ≤ {q / MiB:.2f} MiB", f"≤ ring + 2 × channel + 16 MiB = {(bound + 16 * MiB) // MiB} MiB",
         g <= bound + 16 * MiB and q <= SMALL_CHAN)


# ---------------------------------------------------------------------------------------------
# 5b. The byte-exact ring: how much of its budget a ring replays at each write size.

RING_BUDGET = 1 * MiB
RING_WRITE_SIZES = [1, 16, 20, 1000, 64 * KiB]


def ring_fill(m, size):
    """Fills a fresh stream with 1.5 × the ring budget in writes of `size` bytes (at most
    300,000 writes: 1-byte writes fill the ring's count of writes long before), then reads
    its history as a late joiner does (`@snapshot`). The pool is read before and after."""
    s = m.stream("ring")
    count = min(RING_BUDGET * 3 // 2 // size + 1, 300_000)
    pool0 = xnum(m.path, "memory")
    w, _ = dd(writer_dd(s, size, count))
    if reap(w, 300) != 0:
        raise RuntimeError("ring fill writer failed")
    held = xnum(s, "ring_bytes")
    pool = xnum(m.path, "memory") - pool0
    with deadline(60, "reading the ring's snapshot"):
        with open(s + "@snapshot", "rb") as f:
            replay = len(f.read())
    os.unlink(s)
    return dict(size=size, count=count, held=held, replay=replay, fill=replay / RING_BUDGET,
                pool=pool)


def scenario_ring():
    out("## 5b. The byte-exact ring: replay of a full ring at each write size")
    out()
    out(f"`-o ring_buffer_size={RING_BUDGET >> 20}MiB`, no reader while writing; each stream filled by "
        f"`dd bs=SIZE` with 1.5 × the ring (at most 300,000 writes), then read as a late joiner "
        f"(`cat STREAM@snapshot`). Fill = replayed bytes ÷ ring_buffer_size; the goal is ≥ 0.97 at "
        f"16 bytes and more (a ring keeps at most one write per 16 bytes of its budget, so 1-byte "
        f"writes fill 1/16 of it by design). Pool = what the daemon charges for the stream after "
        f"the fill (data, blocks, boundary records). One run (the figures are exact, not timings). "
        f"**Higher fill is better.**")
    out()
    m = Mount("ring", f"ring_buffer_size={RING_BUDGET},channel_buffer_size=1MiB")
    try:
        res = [ring_fill(m, size) for size in RING_WRITE_SIZES]
    finally:
        m.close()
    rows = [[human(x["size"]) if x["size"] >= KiB else f"{x['size']} B", f"{x['count']}", mb2(x["held"]),
             mb2(x["replay"]), f"{x['fill']:.3f}", mb2(x["pool"]),
             f"{x['pool'] / x['held']:.2f}" if x["held"] else "—"] for x in res]
    table(["write size", "writes", "ring_bytes (MiB)", "replayed (MiB)", "fill", "pool (MiB)",
           "pool ÷ ring_bytes"], rows, "lrrrrrr")
    worst = min((x for x in res if x["size"] >= 16), key=lambda x: x["fill"])
    goal("ring", "ring fill with writes of 16 bytes or more (worst size)",
         f"{worst['fill']:.3f} at {worst['size']} B", "≥ 0.97", worst["fill"] >= 0.97)


# ---------------------------------------------------------------------------------------------
# 6. Late joiner.

def time_read(path, total, iters, eof):
    """Opens `path` `iters` times; returns median (open → first byte, open → `total` bytes)
    in seconds. A read of 64 KiB first, then reads of 1 MiB."""
    first, whole = [], []
    with deadline(60, f"reading {os.path.basename(path)}"):
        for _ in range(iters):
            t0 = time.perf_counter()
            fd = os.open(path, os.O_RDONLY)
            try:
                b = os.read(fd, 64 * KiB)
                t1 = time.perf_counter()
                got = len(b)
                if not b:
                    raise RuntimeError(f"{path}: nothing to read")
                while got < total:
                    b = os.read(fd, min(MiB, total - got) if not eof else MiB)
                    if not b:
                        break
                    got += len(b)
                t2 = time.perf_counter()
            finally:
                os.close(fd)
            if got != total:
                raise RuntimeError(f"{path}: read {got} of {total} bytes")
            first.append(t1 - t0)
            whole.append(t2 - t0)
    return dict(first=med(first), whole=med(whole),
                show=f"{med(first) * 1e6:.0f} µs / {med(whole) * 1e3:.2f} ms")


def scenario_late():
    iters = SZ["late_iters"]
    ring = 6 * MiB
    m = Mount("late", f"channel_buffer_size=6M,ring_buffer_size={ring}")
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmpd = tmpfile = None
    try:
        s = m.stream("late")
        w, _ = dd(writer_dd(s, "64K", 8 * MiB // (64 * KiB)))
        if reap(w) != 0:
            raise RuntimeError("late-joiner fill failed")
        held = xnum(s, "ring_bytes")
        if held < ring * 0.9:
            raise RuntimeError(f"the ring holds {held} bytes, expected about {ring}")
        if shm is None:
            tmpd = tempfile.mkdtemp(prefix="mnt-tmpfs.", dir=WORK)  # the shell's trap unmounts mnt-*
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", tmpd], check=True)
        fd, tmpfile = tempfile.mkstemp(prefix="streamfs-bench.", dir=shm or tmpd)
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(held))
        nm = null()
        out("## 6. Late joiner: open → first byte with a full ring")
        out()
        out(f"A stream whose ring holds {held / MiB:.2f} MiB (ring 6 MiB, filled by 8 MiB of 64 KiB "
            f"writes, no writer left). Each round opens it {iters} times: open(), a 64 KiB read "
            f"(first byte), then 1 MiB reads until the whole replay is read; the round's value is "
            f"the median of its {iters}. Baselines: a file of the same size on tmpfs "
            f"({'/dev/shm' if shm else 'a temporary tmpfs'}), read to EOF; the null filesystem, the "
            f"same number of bytes. **Lower is better**: ratio < 1 means streamfs is faster.")
        out()
        fns = {"streamfs": lambda: time_read(s, held, iters, False),
               "tmpfs file": lambda: time_read(tmpfile, held, iters, True),
               "null": lambda: time_read(nm.file, held, iters, False)}
        res = run_rounds("late joiner", list(fns), lambda c: fns[c]())
        rows = []
        for c, name in (("streamfs", "streamfs"), ("tmpfs file", "tmpfs file"), ("null", "null ceiling")):
            rows.append([name, *spread([x["first"] * 1e6 for x in res[c]], lambda v: f"{v:.0f}"),
                         *spread([x["whole"] * 1e3 for x in res[c]]),
                         "—" if c == "streamfs" else ratio_cell(per_round_ratios(res["streamfs"], res[c], "first")),
                         "—" if c == "streamfs" else ratio_cell(per_round_ratios(res["streamfs"], res[c], "whole"))])
        table(["contender", "first byte µs min", "median", "max", f"whole {held / MiB:.1f} MiB ms min",
               "median", "max", "streamfs ÷ this, first byte", "streamfs ÷ this, whole"], rows, "lrrrrrrrr")
    finally:
        m.close()
        if tmpfile:
            os.unlink(tmpfile)
        if tmpd:
            subprocess.run(["umount", tmpd], stderr=DEVNULL)
            os.rmdir(tmpd)


# ---------------------------------------------------------------------------------------------
# 7. Hostile memory workload against max_memory.

HOST_LIMIT = 64 * MiB
SMALL_FLOOD = r"""
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
b = b"0123456789abcdef"
refused = 0
for _ in range(int(sys.argv[2])):
    try:
        os.write(fd, b)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        refused += 1  # max_memory could not shed enough: the write failed, nothing written
print(refused)
"""


def host_round(nstreams, nsmall):
    """One fresh daemon: every stream filled with a stopped reader, budgets raised, a flood
    of 16-byte writes; the pool sampled throughout, VmHWM at the end."""
    stop = threading.Event()
    m = Mount("host", f"max_memory={HOST_LIMIT >> 20}MB,ring_buffer_size=6MB,channel_buffer_size=6MB")
    stopped = []
    try:
        # Idle: the daemon after one small write and read, as the stress test's warm-up.
        w0 = m.stream("warm")
        with open(w0, "rb", buffering=0) as r0:
            with open(w0, "wb", buffering=0) as f:
                f.write(b"x" * 100000)
            r0.read(MiB)
        os.unlink(w0)
        time.sleep(0.3)
        idle = rss(m.pid)
        peak_pool = [0]
        over = [0]
        overshoot = [0]  # the pool's largest excess over max_memory, bytes
        # Per phase, the sample with the highest RSS and RSS − idle − pool then: what the pool
        # misses at the peak (elsewhere the gap is mostly freed memory the allocator keeps).
        gap = {"fill": (0, 0), "flood": (0, 0)}
        phase = ["fill"]

        def sampler():
            while not stop.is_set():
                try:
                    u = xnum(m.path, "memory")
                    r = rss(m.pid)
                except OSError:
                    break
                peak_pool[0] = max(peak_pool[0], u)
                over[0] += u > HOST_LIMIT
                overshoot[0] = max(overshoot[0], u - HOST_LIMIT)
                if r > gap[phase[0]][0]:
                    gap[phase[0]] = (r, r - idle - u)
                time.sleep(0.02)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        streams = [m.stream("h") for _ in range(nstreams)]
        for i, s in enumerate(streams):
            if i % 4 == 0:  # raised by setfattr, up to what max_memory lets the owner ask
                os.setxattr(s, "user.streamfs.ring_buffer_size", b"60MB")
                os.setxattr(s, "user.streamfs.channel_buffer_size", b"60MB")
            stopped.append(stop_self(s, "cat"))
        for s in streams:
            wait_readers(s, 1)
        wait_until(lambda: all(proc_state(p.pid) == "T" for p in stopped), "the stopped readers")
        for i, s in enumerate(streams):
            w, _ = dd(writer_dd(s, "64K", (128 if i % 4 == 0 else 16) * 16))  # 128 or 16 MiB
            if reap(w, 300) != 0:
                raise RuntimeError("hostile fill writer failed")
        phase[0] = "flood"
        flood = [spawn([sys.executable, "-c", SMALL_FLOOD, streams[k], str(nsmall)], stdout=subprocess.PIPE)
                 for k in (1, 2)]
        refused = 0
        for p in flood:
            text = p.stdout.read()
            if reap(p, 300) != 0:
                raise RuntimeError("small-write flood failed")
            refused += int(text)
        stop.set()
        th.join()
        hwm = peak_rss(m.pid)
        shed = xnum(m.path, "shed_bytes")
        end_pool = xnum(m.path, "memory")
        asked = sum(xnum(s, "bytes_written") for s in streams)
        ratio = (hwm - idle) / HOST_LIMIT
        return dict(idle=idle, hwm=hwm, ratio=ratio, shed=shed, pool=peak_pool[0], over=over[0], refused=refused,
                    end_pool=end_pool, asked=asked, overshoot=max(0, overshoot[0]), gap_fill=gap["fill"][1],
                    gap_flood=gap["flood"][1],
                    show=f"(VmHWM − idle) ÷ limit {ratio:.3f}")
    finally:
        stop.set()
        for p in stopped:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        m.close()


def scenario_hostile():
    ns, nsmall = SZ["host_streams"], SZ["host_small"]
    reps = REPS_GIVEN or SZ["host_reps"]
    out("## 7. Hostile memory workload against max_memory")
    out()
    out(f"`-o max_memory={HOST_LIMIT >> 20}MB,ring_buffer_size=6MB,channel_buffer_size=6MB`; {ns} streams, "
        f"each with a stopped reader (a shell that opened it and SIGSTOPped itself); on every 4th "
        f"stream ring and channel budgets raised to 60 MB by setfattr; each stream filled by `dd bs=64K` "
        f"(128 MiB on the raised ones, 16 MiB on the others); then two floods of {nsmall} 16-byte "
        f"writes on two of the 6 MB streams. The baseline is the same daemon's idle RSS, measured before the load (after one "
        f"100 kB write and read). Ratio = (VmHWM − idle VmRSS) ÷ max_memory: the idle RSS counts as "
        f"the fixed overhead (code, fuser's buffers); goal ≤ 1.05. The pool (`user.streamfs.memory`) "
        f"is sampled every 20 ms with VmRSS: RSS − idle − pool at the highest RSS sample is what the pool does not count there. A ring "
        f"entry is a 16-byte boundary record of the ring's index (its spare capacity at most half its length), "
        f"charged to the pool as 32 bytes; the last row is at most that index's size for the flooded rings. "
        f"A fresh daemon per round, {reps} rounds. **Lower is better**.")
    out()
    res = run_rounds("hostile", ["streamfs"], lambda c: host_round(ns, nsmall), reps)["streamfs"]
    rows = [["daemon idle VmRSS (MiB)", *spread([x["idle"] for x in res], mb2)],
            ["daemon peak RSS, VmHWM (MiB)", *spread([x["hwm"] for x in res], mb)],
            ["(VmHWM − idle) ÷ max_memory", *spread([x["ratio"] for x in res], lambda v: f"{v:.3f}")],
            ["pool peak, user.streamfs.memory (MiB)", *spread([x["pool"] for x in res], mb2)],
            ["pool samples above max_memory", *spread([x["over"] for x in res], lambda v: f"{v:.0f}")],
            ["the pool's largest excess over max_memory (bytes)", *spread([x["overshoot"] for x in res],
                                                                          lambda v: f"{v:.0f}")],
            ["RSS − idle − pool at the highest RSS sample while filling (MiB)", *spread([x["gap_fill"] for x in res], mb2)],
            ["RSS − idle − pool at the highest RSS sample of the floods (MiB)", *spread([x["gap_flood"] for x in res], mb2)],
            ["bytes written (MiB)", *spread([x["asked"] for x in res], mb)],
            ["shed_bytes (MiB)", *spread([x["shed"] for x in res], mb)],
            [f"16-byte writes refused with ENOSPC (of {2 * nsmall})", *spread([x["refused"] for x in res], lambda v: f"{v:.0f}")]]
    table(["measure", "min", "median", "max"], rows, "lrrr")
    worst = max(x["ratio"] for x in res)
    goal("hostile", f"hostile load: (peak RSS − idle) ÷ max_memory {HOST_LIMIT >> 20} MiB",
         f"{worst:.3f} (worst round)", "≤ 1.05", worst <= 1.05 and all(x["over"] == 0 for x in res))


# ---------------------------------------------------------------------------------------------
# 8. Many waiting readers: the daemon's CPU while they wait, and how fast one of them dies.

HOLDER = r"""
import os, signal, sys
n, paths = int(sys.argv[1]), sys.argv[2:]
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the readers
pids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(paths[i % len(paths)], os.O_RDONLY)
            while os.read(fd, 65536):
                pass
        finally:
            os._exit(0)
    pids.append(pid)
print(" ".join(map(str, pids)))
sys.stdout.flush()
sys.stdin.read()  # until the bench closes the pipe (or kills the group)
"""


def states(pids):
    c = {}
    for p in pids:
        st = proc_state(p)
        c[st] = c.get(st, 0) + 1
    return c


def daemon_cpu_over(pid, secs):
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(secs)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def kill_latency(pid, timeout=30.0):
    os.kill(pid, signal.SIGTERM)
    t0 = time.monotonic()
    end = t0 + timeout
    while proc_state(pid) not in ("Z", "gone"):
        if time.monotonic() > end:
            return float("inf")
        time.sleep(0.0005)
    return time.monotonic() - t0


def wait_round(n, secs, nkill):
    m = Mount("wait", "channel_buffer_size=64KB,ring_buffer_size=0")
    holder = None
    try:
        nstreams = max(1, n // 100)
        streams = [m.stream("w") for _ in range(nstreams)]
        idle_cpu = daemon_cpu_over(m.pid, secs)
        t0 = time.monotonic()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(n)] + streams, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=DEVNULL, start_new_session=True)
        pids = [int(x) for x in holder.stdout.readline().split()]
        if len(pids) != n:
            raise RuntimeError(f"the holder forked {len(pids)} of {n} readers")
        wait_until(lambda: xnum(m.path, "readers") == n, f"{n} waiting readers", 300)
        wait_until(lambda: sum(sum(1 for _, _, w in reader_list(s) if w) for s in streams) == n,
                   f"{n} parked reads", 300)
        t_park = time.monotonic() - t0
        rss_n = rss(m.pid)
        time.sleep(1)
        st_before, load_before = states(pids), loadavg()
        cpu_before = daemon_cpu_over(m.pid, secs)
        rnd = random.Random(n)
        victims = rnd.sample(pids, nkill)
        lat = [kill_latency(victims[0])]
        time.sleep(2)  # the other readers' state after the first interrupt
        st_after = states([p for p in pids if p not in victims])
        cpu_after = daemon_cpu_over(m.pid, secs)
        load_after = loadavg()
        for v in victims[1:]:
            lat.append(kill_latency(v))
        for s in streams:  # EOF for every reader: they exit
            os.unlink(s)
        wait_until(lambda: xnum(m.path, "readers") == 0, "the waiting readers to go", 120)
        return dict(n=n, idle=idle_cpu, before=cpu_before, after=cpu_after, lat=lat, park=t_park, rss=rss_n,
                    st_before=st_before, st_after=st_after, load_before=load_before, load_after=load_after,
                    show=f"{n}: CPU {cpu_before:.1f} % / {cpu_after:.1f} %, kill {max(lat) * 1e3:.0f} ms max")
    finally:
        if holder is not None:
            try:
                os.killpg(holder.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            holder.wait()
        m.close()


def scenario_waiting():
    counts, secs, nkill = SZ["wait_counts"], SZ["wait_secs"], SZ["wait_kills"]
    out("## 8. Waiting readers: the daemon's CPU, and killing one of them")
    out()
    out(f"Readers are children forked by one Python process (no exec; a few hundred KiB each), each "
        f"blocked in `read()` of one of N/100 streams (`ring_buffer_size=0`, no writer): every read "
        f"is parked in the daemon. The gate reads /dev/fuse itself and takes FUSE_INTERRUPT, so a waiting "
        f"reader sleeps in S state and is never looked at; only readers that got a signal the gate "
        f"left waiting (stop, continue, ignored) are watched, in D state (up to 200 statuses per 50 ms scan). "
        f"States are field 3 of /proc/PID/stat of every reader. "
        f"Daemon CPU = utime + stime of /proc/PID/stat over {secs:g} s, in % of one core; the baseline "
        f"is the same daemon with its streams and no reader, over the same time. Then one reader gets "
        f"SIGTERM (time to its exit measured: the kernel announces it with FUSE_INTERRUPT and the gate "
        f"answers EINTR), the states, load average and CPU are measured again 2 s later, and "
        f"{nkill - 1} more readers get SIGTERM one by one. A fresh daemon per count, one round. "
        f"**Lower is better**; goal: a few % with 10,000 readers.")
    out()
    res = []
    for n in counts:
        log(f"waiting: {n} readers")
        r = wait_round(n, secs, nkill)
        log(f"waiting: {r['show']}")
        res.append(r)
    rows = []
    for r in res:
        lat = sorted(r["lat"])
        rows.append([f"{r['n']}", f2(r["idle"]), f2(r["before"]), f2(r["after"]),
                     f"{lat[0] * 1e3:.0f} / {med(lat) * 1e3:.0f} / {lat[-1] * 1e3:.0f}",
                     f"{r['st_before'].get('S', 0)} S, {r['st_before'].get('D', 0)} D",
                     f"{r['st_after'].get('S', 0)} S, {r['st_after'].get('D', 0)} D",
                     f"{r['load_before']} → {r['load_after']}", f"{r['park']:.1f}", mb(r["rss"])])
    table(["readers", "daemon CPU % idle (no reader)", "CPU % waiting", "CPU % after the first signal",
           "SIGTERM → exit ms min / median / max", "reader states before", "after the first signal",
           "load average before → after", "s to park all", "daemon RSS MiB"], rows, "rrrrrrrlrr")
    big = res[-1]
    goal("waiting", f"daemon CPU with {big['n']} waiting readers (before / after a signal)",
         f"{big['before']:.1f} % / {big['after']:.1f} % of a core", "a few % (≤ 5 %)",
         max(big["before"], big["after"]) <= 5.0)
    goal("waiting", f"SIGTERM → exit of a waiting reader among {big['n']}", f"max {max(big['lat']) * 1e3:.0f} ms",
         "< 3 s (the stress test's bound)", max(big["lat"]) < 3.0)


# ---------------------------------------------------------------------------------------------
# 9. Start positions: open → first byte of STREAM@SPEC names, and what replay_align=mpegts
# costs a writer.

START_OPTS = "channel_buffer_size=6M,ring_buffer_size=6M"
TS_CLIP_SECS = 10


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(q * len(xs) + 0.999999) - 1))]


def ts_packets(n):
    """n packets of a transport stream that is only 188-byte packets on one PID with no
    keyframe: the fallback when ffmpeg is missing (the scanner stays locked on it)."""
    out_ = bytearray()
    for i in range(n):
        out_ += bytes([0x47, 0x01, 0x00, 0x10 | (i & 15)]) + bytes(184)
    return bytes(out_)


TS_CLIP = [None]


def ts_clip():
    """A 10 s MPEG-TS clip made once per run by ffmpeg (H.264 with a keyframe every second,
    and AAC), as bytes; None without ffmpeg."""
    if TS_CLIP[0] is None:
        path = os.path.join(WORK, "clip.ts")
        base = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={TS_CLIP_SECS}",
                "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={TS_CLIP_SECS}"]
        tail = ["-g", "25", "-b:v", "4M", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", path]
        made = False
        for codec in (["-c:v", "libx264", "-preset", "ultrafast"], ["-c:v", "mpeg2video"]):
            try:
                made = subprocess.run(base + codec + tail, stdout=DEVNULL, stderr=DEVNULL).returncode == 0
            except FileNotFoundError:
                break
            if made:
                break
        if made:
            with open(path, "rb") as f:
                TS_CLIP[0] = f.read()
            os.unlink(path)
        else:
            TS_CLIP[0] = b""
    return TS_CLIP[0] or None


def ts_bulk(total):
    """A descriptor of an unlinked file on tmpfs holding `total` bytes (whole packets) of
    MPEG-TS: the clip repeated, or the fallback packets; and which it is."""
    clip = ts_clip()
    what = "the ffmpeg clip repeated" if clip else "bare packets (no ffmpeg)"
    piece = clip or ts_packets(5577)
    d = "/dev/shm" if os.path.isdir("/dev/shm") else WORK
    fd, path = tempfile.mkstemp(prefix="streamfs-bench.", suffix=".ts", dir=d)
    os.unlink(path)  # nothing is left behind, however the bench ends
    total -= total % 188
    left = total
    while left > 0:
        left -= os.write(fd, piece[:left])
    return fd, total, what


def first_bytes(path, opens, rnd, check=None):
    """Opens `path` `opens` times, each after a random pause of 0-1 ms so that an open falls
    anywhere between two of the writer's messages. Each time: open(), one read of 64 KiB
    (the first byte), close(). Returns the times in µs and what `check` said of each read
    (it gets the monotonic ns just before open() and the bytes)."""
    times, seen = [], []
    with deadline(120, f"opening {os.path.basename(path)}"):
        for _ in range(opens):
            time.sleep(rnd.uniform(0, 0.001))
            t0 = time.monotonic_ns()
            fd = os.open(path, os.O_RDONLY)
            try:
                b = os.read(fd, 64 * KiB)
                t1 = time.monotonic_ns()
            finally:
                os.close(fd)
            if not b:
                raise RuntimeError(f"{path}: end of file at the first read")
            times.append((t1 - t0) / 1000)
            if check:
                seen.append(check(t0, t1, b))
    return dict(p50=pct(times, 0.5), p99=pct(times, 0.99), seen=seen,
                show=f"p50 {pct(times, 0.5):.0f} p99 {pct(times, 0.99):.0f} µs")


def msg_sent(b):
    """The send time (CLOCK_MONOTONIC ns) carried by a latency message at the start of `b`."""
    return int.from_bytes(b[8:16], "little", signed=True)


def ts_pid(b):
    return ((b[1] & 0x1F) << 8) | b[2] if len(b) >= 3 and b[0] == 0x47 else None


def ts_throughput(align, fd, total):
    """`dd bs=1M` of the TS file into a stream read by `dd bs=1M` (lossless, as the
    throughput scenario): GB/s from the writer's start to the reader's EOF."""
    m = Mount("ts", f"{TP_OPTS},replay_align={align}")
    try:
        s = m.stream("ts")
        r, rerr = dd(reader_dd(s))
        wait_readers(s, 1)
        wait_parked(s, 1)
        os.lseek(fd, 0, os.SEEK_SET)
        cpu0 = cpu_seconds(m.pid)
        t0 = time.monotonic()
        w, _ = dd(["of=" + s, "bs=1M", "status=none"], stdin=fd)
        [(tw, rc, _)] = wait_procs([w], 300, "the TS writer")
        if rc != 0:
            raise RuntimeError(f"TS writer exited {rc}")
        written, dropped = xnum(s, "bytes_written"), xnum(s, "dropped_bytes")
        os.unlink(s)
        [(t1, rc, _)] = wait_procs([r], 300, "the TS reader")
        cpu = cpu_seconds(m.pid) - cpu0
        got = dd_bytes(rerr)
        if rc != 0 or written != total or dropped or got != total:
            raise RuntimeError(f"TS run lost data: wrote {written} of {total}, dropped {dropped}, got {got}")
        with open(m.log, errors="replace") as f:
            if "does not parse as MPEG-TS" in f.read():
                raise RuntimeError("the scanner did not lock on the TS file")
        return dict(gbs=got / (t1 - t0) / 1e9, cpu=cpu / (got / GiB), show=f"{got / (t1 - t0) / 1e9:.2f}")
    finally:
        m.close()


def scenario_start():
    opens = SZ["start_opens"]
    rnd = random.Random(9)
    m = Mount("start", START_OPTS)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else WORK
    tmpfile = None
    try:
        s = m.stream("start")
        # The ring: 6 MiB of 64 KiB writes, then the writer's 64-byte messages every 1 ms.
        w, _ = dd(writer_dd(s, "64K", 6 * MiB // (64 * KiB)))
        if reap(w) != 0:
            raise RuntimeError("start: the fill failed")
        clip = ts_clip()
        ts = None
        if clip:
            ts = m.stream("ts")
            os.setxattr(ts, "user.streamfs.replay_align", b"mpegts")
            fill = clip[:4 * MiB - (4 * MiB) % 188]
            with open(ts, "wb", buffering=0) as f:  # 64 KiB writes, cutting packets anywhere
                for i in range(0, len(fill), 64 * KiB):
                    f.write(fill[i:i + 64 * KiB])
        fd, tmpfile = tempfile.mkstemp(prefix="streamfs-bench.", dir=shm)
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(6 * MiB))
        writer = spawn(lat_writer(3_600_000, 0, [s]))  # an hour of messages: killed at the end
        wait_until(lambda: xnum(s, "writes") > 96 + 1100, "a second of the writer's messages")

        def live(t0, t1, b):  # when its first message was sent after the open, and took to come
            return ((msg_sent(b) - t0) / 1000, (t1 - msg_sent(b)) / 1000)

        def back(t0, t1, b):  # how far back from the open its first message was sent
            return (t0 - msg_sent(b)) / 1e6

        def at_pat(t0, t1, b):
            return ts_pid(b)

        out("## 9. Start positions: open → first byte")
        out()
        out(f"One stream (ring 6 MiB, first filled by 6 MiB of 64 KiB writes) written by "
            f"`scripts/latency.rs` with a {LAT_SIZE}-byte message every 1 ms for the whole "
            f"scenario. Each round opens each name {opens} times, each open after a random pause "
            f"of 0–1 ms: open(), one 64 KiB read, close(); the time is open() → the read's return, "
            f"nothing subtracted. `STREAM@live` waits for the next message (0.5 ms on average "
            f"with an open at a random moment, 1 ms at worst); `STREAM@-1s` replays the messages "
            f"of the last second; `STREAM` the whole ring (its oldest 64 KiB write first); a "
            f"`replay_align=mpegts` stream holding 4 MiB of an ffmpeg MPEG-TS clip (H.264, a "
            f"keyframe a second, 64 KiB writes, no writer left) opened `@live` starts at its "
            f"newest keyframe; the baseline is a 6 MiB file on tmpfs. Cells: **median** over "
            f"rounds (min–max) of each round's percentile. **Lower is better**.")
        out()
        fns = {"tmpfs file": lambda: first_bytes(tmpfile, opens, rnd),
               "STREAM": lambda: first_bytes(s, opens, rnd),
               "STREAM@-1s": lambda: first_bytes(s + "@-1s", opens, rnd, back),
               "STREAM@live": lambda: first_bytes(s + "@live", opens, rnd, live)}
        if ts:
            fns["mpegts STREAM@live"] = lambda: first_bytes(ts + "@live", opens, rnd, at_pat)
        res = run_rounds("start", list(fns), lambda c: fns[c]())

        def cell(c, k):
            xs = [x[k] for x in res[c]]
            return f"**{med(xs):.0f}** ({min(xs):.0f}–{max(xs):.0f})"

        notes = {}
        lv = [v for x in res["STREAM@live"] for v, _ in x["seen"]]
        tr = [v for x in res["STREAM@live"] for _, v in x["seen"]]
        notes["STREAM@live"] = (f"first message sent {med(lv):.0f} µs after the open, then {med(tr):.0f} µs "
                                f"to the read's return (medians); {sum(1 for v in lv if v < 0)} of "
                                f"{len(lv)} sent before the open (earliest {min(lv):.0f} µs)")
        bk = [v for x in res["STREAM@-1s"] for v in x["seen"]]
        notes["STREAM@-1s"] = f"replay from {min(bk):.0f}–{max(bk):.0f} ms before the open"
        if ts:
            pids = [v for x in res["mpegts STREAM@live"] for v in x["seen"]]
            with open(ts + "@live", "rb", buffering=0) as f:  # the replay's size, once
                os.set_blocking(f.fileno(), False)
                n = 0
                while True:
                    try:
                        b = f.read(MiB)
                    except BlockingIOError:
                        break
                    if not b:
                        break
                    n += len(b)
            notes["mpegts STREAM@live"] = (f"{sum(1 for p in pids if p == 0)} of {len(pids)} began "
                                           f"with a PAT packet; replay {n / KiB:.0f} KiB")
        else:
            notes["mpegts STREAM@live"] = "not run: no ffmpeg"
        rows = []
        for c in fns:
            rows.append([c, cell(c, "p50"), cell(c, "p99"),
                         "—" if c == "tmpfs file" else ratio_cell(per_round_ratios(res[c], res["tmpfs file"], "p50")),
                         notes.get(c, "")])
        table(["opened", "p50 µs", "p99 µs", "p50 ÷ tmpfs p50", "checked"], rows, "lrrrl")
        imm = [c for c in ("STREAM@-1s", "mpegts STREAM@live") if c in res]
        worst = max(med([x["p99"] for x in res[c]]) for c in imm)
        goal("start", "start: " + " and ".join(f"`{c}`" for c in imm) + " first byte, p99",
             f"{worst:.0f} µs (worst of the two)", "immediate: < 1000 µs (no wait for a write)", worst < 1000)
    finally:
        m.close()
        if tmpfile:
            os.unlink(tmpfile)

    total = SZ["ts_mib"] * MiB
    fd, total, what = ts_bulk(total)
    try:
        out(f"### Writing MPEG-TS: `replay_align=mpegts` against `replay_align=write`")
        out()
        out(f"`dd bs=1M` of {human(total)} of MPEG-TS ({what}, from an unlinked file on tmpfs) into "
            f"a stream read by `dd of=/dev/null bs=1M`, options as in 1 (slow_reader=block, channel "
            f"64 MiB, ring 6 MiB) plus `replay_align`; a fresh daemon per run; every run checks "
            f"that all bytes arrived and that the scanner never gave up on the stream. GB/s = "
            f"bytes / (writer start → reader EOF). **Higher is better**; goal mpegts ≥ 0.9 × write.")
        out()
        fns = {"write": lambda: ts_throughput("write", fd, total),
               "mpegts": lambda: ts_throughput("mpegts", fd, total)}
        res = run_rounds("TS writes", list(fns), lambda c: fns[c]())
        rows = []
        for c in ("write", "mpegts"):
            rows.append([f"replay_align={c}", *spread([x["gbs"] for x in res[c]]),
                         f2(med([x["cpu"] for x in res[c]])),
                         "—" if c == "write" else ratio_cell(per_round_ratios(res["mpegts"], res["write"], "gbs"))])
        table(["stream", "GB/s min", "median", "max", "daemon CPU s/GiB", "÷ write"], rows, "lrrrrr")
        rr = per_round_ratios(res["mpegts"], res["write"], "gbs")
        goal("start", "1 MiB writes of MPEG-TS: replay_align=mpegts ÷ write", ratio_cell(rr), "≥ 0.9",
             med(rr) >= 0.9)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Soak: a steady writer, readers joining and leaving at random, RSS every minute.

WRITER = r"""
import os, sys, time
path, rate, chunk = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
buf = bytes(range(256)) * (chunk // 256)
fd = os.open(path, os.O_WRONLY)
period = chunk / rate
t = time.monotonic()
n = 0
while True:
    try:
        os.write(fd, buf)
    except BrokenPipeError:
        break
    n += 1
    t += period
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
"""


def section_soak(minutes):
    rate = 2 * MiB
    chunk = 64 << 10
    m = Mount("soak", "channel_buffer_size=6MB,ring_buffer_size=6MB")
    rnd = random.Random(1)
    try:
        out(f"(d) soak: {minutes:g} min, writer {mb(rate)} MiB/s in {chunk >> 10} KiB writes; "
            f"readers (cat, head -c, dd) join and leave at random, some paused 2-6 s")
        out(f"    budgets: channel 6 MiB, ring 6 MiB; RSS sampled every minute")
        s = m.stream("soak")
        idle = rss(m.pid)
        w = spawn([sys.executable, "-c", WRITER, s, str(rate), str(chunk)])
        wait_until(lambda: xnum(s, "writers") == 1, "the soak writer to open")
        live = []  # (Popen, kind)
        paused = {}  # pid -> resume time
        joins = leaves = stuck = 0
        rows = []
        t0 = time.monotonic()
        end = t0 + minutes * 60
        next_sample = t0 + 60
        next_event = t0
        cpu0 = cpu_seconds(m.pid)

        def sample(label):
            now = time.monotonic()
            rows.append(dict(t=now - t0, label=label, rss=rss(m.pid), hwm=peak_rss(m.pid),
                             written=xnum(s, "bytes_written"), readers=xnum(s, "readers"),
                             ring=xnum(s, "ring_bytes"), drops=xnum(s, "dropped_writes"),
                             queued=sum(f["queued"] for _, f, _ in reader_list(s)),
                             joins=joins, leaves=leaves, stuck=stuck,
                             cpu=cpu_seconds(m.pid) - cpu0))

        # Growth is measured from the first minute on: by then the ring is full and the
        # allocator has its working set. Rows are printed as they are sampled.
        shown = []

        def show():
            if not shown and len(rows) >= 2:
                first = rows[1] if rows[1]["label"] != "end" else rows[0]
                shown.append(first)
                out(f"    idle RSS before the writer: {mb(idle)} MiB; 'vs {first['label']}' = RSS - RSS at "
                    f"{first['label']}; queued = readers' live bytes now")
                out(f"    {'sample':<8} {'RSS MiB':>8} {'vs ' + first['label']:>9} {'peak MiB':>9} "
                    f"{'written MiB':>12} {'readers':>7} {'joins':>6} {'leaves':>6} {'ring MiB':>8} "
                    f"{'queued MiB':>10} {'drops':>6} {'daemon CPU':>10}")
                todo = rows
            elif shown:
                todo = rows[-1:]
            else:
                return
            first = shown[0]
            for r in todo:
                out(f"    {r['label']:<8} {mb(r['rss']):>8} {(r['rss'] - first['rss']) / MiB:>+9.1f} "
                    f"{mb(r['hwm']):>9} {mb(r['written']):>12} {r['readers']:>7} {r['joins']:>6} "
                    f"{r['leaves']:>6} {mb(r['ring']):>8} {mb(r['queued']):>10} {r['drops']:>6} "
                    f"{100 * r['cpu'] / max(r['t'], 1e-9):>9.1f}%")

        sample("start")
        while True:
            now = time.monotonic()
            if now >= end:
                break
            # Resume paused readers whose pause is over.
            for pid, t in list(paused.items()):
                if now >= t:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                    del paused[pid]
            # Readers that left by themselves (head -c).
            for p, kind in list(live):
                if p.poll() is not None:
                    children.discard(p)
                    live.remove((p, kind))
                    paused.pop(p.pid, None)
                    leaves += 1
            if now >= next_event:
                next_event = now + rnd.uniform(0.2, 2.0)
                x = rnd.random()
                if len(live) < 3 or (x < 0.5 and len(live) < 12):
                    kind = rnd.choice(["cat", "cat", "head", "dd"])
                    if kind == "cat":
                        argv = ["cat", s]
                    elif kind == "head":
                        argv = ["head", "-c", str(rnd.randint(1, 40) * MiB), s]
                    else:
                        argv = ["dd", "if=" + s, "of=/dev/null", "bs=1M", "status=none"]
                    live.append((spawn(argv, stdout=DEVNULL, stderr=DEVNULL), kind))
                    joins += 1
                elif x < 0.85 and live:
                    p, kind = live.pop(rnd.randrange(len(live)))
                    sig = rnd.choice([signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
                    p.send_signal(sig)
                    if p.pid in paused:
                        os.kill(p.pid, signal.SIGCONT)
                        del paused[p.pid]
                    try:
                        p.wait(timeout=5)
                        children.discard(p)
                    except subprocess.TimeoutExpired:
                        # A reader that outlives its signal by 5 s: the daemon did not end
                        # its parked read. Counted, then killed for good.
                        stuck += 1
                        out(f"    ! {kind} reader pid {p.pid} still alive 5 s after {sig.name}")
                        p.kill()
                        reap(p, timeout=10)
                    leaves += 1
                elif live:
                    p, kind = rnd.choice(live)
                    if p.pid not in paused:
                        try:
                            os.kill(p.pid, signal.SIGSTOP)
                            paused[p.pid] = now + rnd.uniform(2, 6)
                        except ProcessLookupError:
                            pass
            if w.poll() is not None:
                raise RuntimeError("the soak writer died")
            if now >= next_sample:
                sample(f"{(now - t0) / 60:.0f} min")
                show()
                next_sample += 60
            time.sleep(0.05)
        sample("end")
        show()
        for pid in list(paused):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        kill_all()
        wait_readers(s, 0)
        os.unlink(s)
        after = rss(m.pid)

        first, last = shown[0], rows[-1]
        span = last["t"] - first["t"]
        if span > 0:
            growth = (last["rss"] - first["rss"]) / MiB
            rate = (f"{growth / (span / 3600):+.1f} MiB/hour" if span >= 300
                    else "soak 6+ minutes for a per-hour rate")
            out(f"    RSS growth from {first['label']} to end: {growth:+.1f} MiB ({rate}); written rate "
                f"{(last['written'] - first['written']) / span / MiB:.2f} MiB/s")
            # A plateau shows as no growth over the second half.
            mid = min(rows, key=lambda r: abs(r["t"] - (first["t"] + last["t"]) / 2))
            if mid is not last and mid is not first:
                out(f"    RSS growth over the second half ({mid['label']} to end): "
                    f"{(last['rss'] - mid['rss']) / MiB:+.1f} MiB")
        out("    (drops come from the paused readers: a 2-6 s pause at 2 MiB/s overflows a 6 MiB channel)")
        out(f"    readers that outlived their signal by 5 s: {stuck} of {leaves} leaves")
        out(f"    after readers left and the stream was removed: {mb(after)} MiB "
            f"({(after - idle) / MiB:+.1f} MiB over idle)")
        out()
    finally:
        m.close()


# ---------------------------------------------------------------------------------------------
# Machine, noise, goals.

def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return dict(busy=(user + nice + system + irq + softirq) / TICK, steal=steal / TICK,
                total=sum(v) / TICK)


def own_cpu():
    t = os.times()
    nm = NULL[0]
    live = 0.0
    if nm is not None:
        try:
            live = cpu_seconds(nm.pid)
        except OSError:
            pass
    return t.user + t.system + t.children_user + t.children_system + daemon_cpu[0] + live


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def noise_report(c0, own0, wall):
    c1 = cpu_times()
    busy = c1["busy"] - c0["busy"]
    total = c1["total"] - c0["total"]
    others = max(0.0, busy - (own_cpu() - own0))
    ncpu = os.cpu_count() or 1
    out(f"Noise: other processes used {others:.0f} CPU-s of the machine's {wall * ncpu:.0f} "
        f"({100 * others / max(wall * ncpu, 1e-9):.0f} %) during the run; steal "
        f"{100 * (c1['steal'] - c0['steal']) / max(total, 1e-9):.1f} %; load average now {loadavg()}.")
    if MODE != "soak":
        out("Ratios pair runs made seconds apart, in an order rotated every round; wide ranges "
            "mean the machine was busy.")


def scenario_http():
    # In its own file (this one is long enough); it uses this module's helpers.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_http
    bench_http.scenario(sys.modules[__name__])


# ---------------------------------------------------------------------------------------------
# Streams on NATS JetStream (scripts/bench_nats.py; only with --only nats).

def scenario_nats():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_nats
    bench_nats.run(sys.modules[__name__])


def goals_table():
    out("## Goals")
    out()
    out("Each measured ratio is the median of per-round ratios (min–max) from this run"
        + (" (quick mode: smaller sizes, fewer rounds)" if QUICK else "") + ".")
    out()
    rows = []
    scen_goals = {
        "throughput": ["1 → 1, 1 MiB writes: streamfs ÷ pipe", "1 → 1, 1 MiB writes: streamfs ÷ null ceiling",
                       "1 → 1, 64 KiB writes: streamfs ÷ null ceiling"],
        "fanout": ["fanout N = 16, delivered: streamfs ÷ tee + FIFOs",
                   "fanout N = 16, delivered: streamfs ÷ null ceiling",
                   "fanout: writer not held back by a stopped reader"],
        "latency": ["latency p50 ÷ pipe p50, 1 and 16 readers", "latency, 16 readers: streamfs p99"],
        "memory": ["memory: peak RSS within ring + readers × channel + 16 MiB", "memory: RSS per idle reader"],
        "small": ["16-byte writes: budgets hold"],
        "ring": ["ring fill with writes of 16 bytes or more (worst size)"],
        "hostile": ["hostile load: (peak RSS − idle) ÷ max_memory"],
        "waiting": ["daemon CPU with 10000 waiting readers", "SIGTERM → exit of a waiting reader"],
        "start": ["start: `STREAM@-1s` and `mpegts STREAM@live` first byte, p99",
                  "1 MiB writes of MPEG-TS: replay_align=mpegts ÷ write"],
        "http": ["http: CPU per GiB delivered, streamfs ÷ Icecast", "http: RSS per listener, streamfs ÷ Icecast",
                 "http: 5,000 listeners held with no drops", "http: 1 → 1, 1 MiB writes, HTTP ÷ mount"],
    }
    have = {g[0] for g in GOALS}
    for scen, text, measured, target, met in GOALS:
        rows.append([text, measured, target, "met" if met else "**missed**"])
    for scen, texts in scen_goals.items():
        if scen not in have:
            for t in texts:
                rows.append([t, "not run", "", "—"])
    table(["goal", "measured", "target", "result"], rows, "lllc")


def main():
    c0, own0 = cpu_times(), own_cpu()
    maxp = ""
    try:
        with open("/proc/sys/fs/fuse/max_pages_limit") as f:
            maxp = f", fs.fuse.max_pages_limit {f.read().strip()}"
    except OSError:
        pass
    what = MODE
    if MODE != "soak":
        what += f", {REPS} rounds" + (f", only {','.join(ONLY)}" if ONLY != SCENARIOS[:-1] else "")
    out(f"**streamfs bench** ({what}): "
        f"{os.cpu_count()} CPUs ({cpu_model()}), kernel {os.uname().release}, load average "
        f"{loadavg()}{maxp}")
    out()
    t0 = time.monotonic()
    if MODE == "soak":
        section_soak(SOAK_MIN)
    else:
        out("Contenders run once per round in an order rotated every round; ratios are per round "
            "(runs seconds apart), shown as **median** (min–max). GB/s = 1e9 bytes/s. "
            "The null ceiling is a fuser filesystem that does nothing (scripts/nullfs.rs).")
        out()
        for name in SCENARIOS:
            if name in ONLY:
                log(f"scenario {name}")
                globals()["scenario_" + name]()
        goals_table()
    wall = time.monotonic() - t0
    noise_report(c0, own0, wall)
    out(f"Bench finished in {wall:.0f} s.")


try:
    main()
except KeyboardInterrupt:
    sys.exit(130)
finally:
    kill_all()
    for mnt in list(mounts):
        try:
            mnt.close()
        except Exception as e:  # the shell's trap unmounts what is left
            print(f"bench: closing {mnt.path}: {e}", file=sys.stderr)
