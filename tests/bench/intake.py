#!/usr/bin/env python3
"""Benchmarks what remixd's intake and pipeline cost, through the real release binary and the
test fake API (`system_helper serve`, tests/system/helper.rs) on loopback, answering at once.

    tests/bench/intake.py [--sizes 500,2000,8000,20000] [--only drop,backlog,idle,latency]

The work folders are made under $TMPDIR (default /tmp); point it at another filesystem to
measure there, e.g. a journaled ext4 when the root one has no journal (see LEFT below).

It reports:
- drop: N images (64 KiB PNG + .txt sidecar each) renamed at once from a staging folder on
  the same filesystem into the inbox; time until every job's `job.completed` line (each one
  is written after its metadata.json); jobs/s, remixd's CPU ms per job (utime+stime from
  /proc) and its peak RSS (VmHWM). concurrency 4, settle 100ms (so that the settle time does
  not dominate the smaller runs; jobs/s is counted from the drop).
- backlog: 20,000 images with .txt sidecars waiting while the API is paused (its address
  refuses connections); remixd's CPU-s over 30 s once they have all settled, and its RSS;
  native and poll (poll_interval 2s) mode.
- idle: CPU-s over 20 s with an empty inbox.
- latency: drop -> `job.claimed` for 40 single drops into an idle daemon, and again while
  20,000 settled images wait in the inbox for sidecars (sidecar_wait 1h), p50 and max
  against settle (1s, the default).

Figures vary with the machine: quote them with its size (printed first), as medians or
ratios from one run.
"""

import argparse
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

# Work folders are removed only when the whole bench is done: on an ext4 without a journal,
# every inode freed in the last minutes makes each new file's allocation scan past it (the
# kernel's `recently_deleted`), so removing one run's 20,000 files would slow the next run.
LEFT = []
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEY = "sk-test-Qz7wX2vLk9"
TICKS = os.sysconf("SC_CLK_TCK")


def build():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    out = subprocess.run(
        ["cargo", "test", "--release", "--quiet", "--test", "system_helper", "--no-run",
         "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    fake = None
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "system_helper":
            fake = msg["executable"]
    return os.path.join(ROOT, "target", "release", "remixd"), fake


def png(size, seed):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1024, 768, 8, 2, 0, 0, 0))
    pad = max(0, size - len(head) - 24)
    body = chunk(b"tEXt", b"bench\x00" + os.urandom(max(0, pad - 6)))
    return head + body + chunk(b"IEND", b"")


def stage(folder, count, sidecars=True, prefix="img"):
    """count images (and sidecars) in 10 subfolders of folder."""
    for i in range(count):
        sub = os.path.join(folder, f"d{i % 10}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{prefix}{i}.png"), "wb") as f:
            f.write(png(65536, i))
        if sidecars:
            with open(os.path.join(sub, f"{prefix}{i}.txt"), "w") as f:
                f.write(f"benchmark image {i}")


def move_all(staging, inbox):
    """Renames every staged file into the inbox (folders first, then files)."""
    names = []
    for sub in sorted(os.listdir(staging)):
        os.makedirs(os.path.join(inbox, sub), exist_ok=True)
        for name in os.listdir(os.path.join(staging, sub)):
            names.append((sub, name))
    # Sidecars first, so an image never waits for its sidecar to appear.
    names.sort(key=lambda n: not n[1].endswith(".txt"))
    for sub, name in names:
        os.rename(os.path.join(staging, sub, name), os.path.join(inbox, sub, name))


class Fake:
    def __init__(self, binary):
        self.proc = subprocess.Popen([binary, "serve", "0"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.url = line.split()[-1]

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def unused_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    def __init__(self, binary, work, base_url, extra_watch="", extra_limits="", level="info"):
        self.work = work
        for d in ("inbox", "outbox", "quarantine"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        cfg = os.path.join(work, "config.yaml")
        with open(cfg, "w") as f:
            f.write(f"""inbox: inbox
outbox: outbox
quarantine: quarantine
api: {{provider: kkiai, base_url: "{base_url}"}}
watch: {{{extra_watch}}}
limits: {{concurrency: 4, requests_per_minute: 1000000{extra_limits}}}
retry: {{max_backoff: 30s}}
logging: {{format: json, level: {level}, stats_interval: 1h}}
""")
        env = dict(os.environ, REMIXD_API_KEY=KEY)
        # REMIXD_BENCH_WRAP runs remixd under a profiler, e.g. "strace -c -f -o /tmp/s.txt".
        wrap = os.environ.get("REMIXD_BENCH_WRAP", "").split()
        self.proc = subprocess.Popen(wrap + [binary, "run", "-c", cfg], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, bufsize=1 << 20)
        self.buf = b""
        self.counts = {}
        self.claimed = {}

    def lines(self, timeout):
        """Yields parsed log lines until timeout seconds pass with none."""
        fd = self.proc.stdout.fileno()
        while True:
            r, _, _ = select.select([fd], [], [], timeout)
            if not r:
                return
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            self.buf += chunk
            *full, self.buf = self.buf.split(b"\n")
            for raw in full:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                event = line.get("event")
                self.counts[event] = self.counts.get(event, 0) + 1
                if event == "job.claimed":
                    self.claimed[line.get("file")] = line.get("timestamp")
                yield line

    def wait_for(self, event, count, timeout=600):
        deadline = time.time() + timeout
        while self.counts.get(event, 0) < count:
            if time.time() > deadline:
                raise SystemExit(f"timed out waiting for {count} x {event} (have {self.counts.get(event, 0)})")
            for _ in self.lines(1.0):
                if self.counts.get(event, 0) >= count:
                    break

    def drain(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            for _ in self.lines(min(1.0, max(0.01, end - time.time()))):
                pass

    def cpu_ticks(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def status(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_drop(remixd, fake_bin, n):
    work = tempfile.mkdtemp(prefix="remixd-bench-")
    try:
        staging = os.path.join(work, "staging")
        stage(staging, n)
        fake = Fake(fake_bin)
        d = Daemon(remixd, work, fake.url, "settle: 100ms, sidecar_wait: 0s")
        d.wait_for("daemon.ready", 1)
        before = d.cpu_ticks()
        start = time.time()
        move_all(staging, os.path.join(work, "inbox"))
        d.wait_for("job.completed", n, timeout=1200)
        secs = time.time() - start
        cpu = (d.cpu_ticks() - before) / TICKS
        rss = d.status("VmHWM")
        d.stop()
        fake.stop()
        return n / secs, cpu * 1000 / n, rss
    finally:
        LEFT.append(work)


def bench_backlog(remixd, mode, n=20000):
    work = tempfile.mkdtemp(prefix="remixd-bench-")
    try:
        stage(os.path.join(work, "inbox"), n)
        base = f"http://127.0.0.1:{unused_port()}"
        d = Daemon(remixd, work, base, f"mode: {mode}, poll_interval: 2s")
        d.wait_for("daemon.ready", 1)
        d.wait_for("api.paused", 1, timeout=120)
        d.drain(8)  # every file settles (1s) and the job slots fill
        before = d.cpu_ticks()
        d.drain(30)
        cpu = (d.cpu_ticks() - before) / TICKS
        rss = d.status("VmRSS")
        d.stop()
        return cpu, rss
    finally:
        LEFT.append(work)


def bench_idle(remixd):
    work = tempfile.mkdtemp(prefix="remixd-bench-")
    try:
        d = Daemon(remixd, work, f"http://127.0.0.1:{unused_port()}")
        d.wait_for("daemon.ready", 1)
        d.drain(2)
        before = d.cpu_ticks()
        d.drain(20)
        cpu = (d.cpu_ticks() - before) / TICKS
        d.stop()
        return cpu
    finally:
        LEFT.append(work)


def parse_ts(text):
    # 2026-11-30T04:23:03.123456Z
    main, _, frac = text.rstrip("Z").partition(".")
    t = time.mktime(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return t + float("0." + (frac or "0"))


def bench_latency(remixd, fake_bin, backlog):
    work = tempfile.mkdtemp(prefix="remixd-bench-")
    try:
        if backlog:
            stage(os.path.join(work, "inbox"), backlog, sidecars=False, prefix="waiting")
        fake = Fake(fake_bin)
        d = Daemon(remixd, work, fake.url, "sidecar_wait: 1h")
        d.wait_for("daemon.ready", 1)
        d.drain(3)
        staging = os.path.join(work, "staging")
        os.makedirs(staging)
        dropped = {}
        for i in range(40):
            for name, data in ((f"drop{i}.txt", b"a prompt"), (f"drop{i}.png", png(65536, i))):
                with open(os.path.join(staging, name), "wb") as f:
                    f.write(data)
            os.rename(os.path.join(staging, f"drop{i}.txt"), os.path.join(work, "inbox", f"drop{i}.txt"))
            dropped[f"drop{i}.png"] = time.time()
            os.rename(os.path.join(staging, f"drop{i}.png"), os.path.join(work, "inbox", f"drop{i}.png"))
            d.drain(0.15)
        d.wait_for("job.completed", 40, timeout=120)
        lat = sorted((parse_ts(d.claimed[f]) - t) * 1000 for f, t in dropped.items())
        d.stop()
        fake.stop()
        return lat[len(lat) // 2], lat[-1]
    finally:
        LEFT.append(work)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="500,2000,8000,20000")
    ap.add_argument("--only", default="drop,backlog,idle,latency")
    ap.add_argument("--remixd", help="another remixd binary to measure (e.g. an older build)")
    args = ap.parse_args()
    remixd, fake = build()
    remixd = os.path.abspath(args.remixd) if args.remixd else remixd
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {os.cpu_count()} cores, {mem:.0f} GiB; remixd {remixd}")
    print(f"work folders on: {filesystem(tempfile.gettempdir())}")
    try:
        run(args, remixd, fake)
    finally:
        for work in LEFT:
            shutil.rmtree(work, ignore_errors=True)


def filesystem(path):
    """The filesystem under path, and whether an ext* one has a journal."""
    found = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE", "-T", path],
                           capture_output=True, text=True).stdout.split()
    if len(found) < 2:
        return "unknown"
    kind, source = found[0], found[1]
    if kind.startswith("ext"):
        head = subprocess.run(["dumpe2fs", "-h", source], capture_output=True, text=True)
        if head.returncode == 0:
            kind += " with journal" if "has_journal" in head.stdout else " without journal"
    return f"{kind} ({source}) at {path}"


def run(args, remixd, fake):
    only = set(args.only.split(","))
    if "drop" in only:
        print("drop (rename N at once, fake API at 0 ms, concurrency 4, settle 100ms):")
        for n in [int(x) for x in args.sizes.split(",")]:
            rate, cpu_ms, rss = bench_drop(remixd, fake, n)
            print(f"  N={n:>6}: {rate:7.1f} jobs/s, {cpu_ms:5.2f} CPU ms/job, peak RSS {rss:5.1f} MiB", flush=True)
    if "backlog" in only:
        for mode in ("native", "poll"):
            cpu, rss = bench_backlog(remixd, mode)
            print(f"backlog 20000 pending, API paused, {mode:>6}: {cpu:5.2f} CPU-s per 30 s, RSS {rss:5.1f} MiB", flush=True)
    if "idle" in only:
        print(f"idle, empty inbox: {bench_idle(remixd):5.3f} CPU-s per 20 s", flush=True)
    if "latency" in only:
        for backlog in (0, 20000):
            p50, mx = bench_latency(remixd, fake, backlog)
            print(f"drop->claim with {backlog:>5} pending (settle 1s): p50 {p50:6.1f} ms, max {mx:6.1f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
