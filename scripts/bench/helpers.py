#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: test data, small measuring programs, and the report.

Subcommands (each prints one line of name=value pairs, except `report`):
  mktree DIR NFILES                 tree of NFILES files of 4-64 KiB (64 per directory)
  mklist DIR N                      N tiny files (objects for the ls -l row)
  interleave FILE CHUNK [BUDGET]    two sequential readers on ONE open fd (stop after BUDGET s)
  ttfb FILE COUNT LEN [URL]         pread LEN at COUNT fixed random offsets: median ms
                                    (with the bench server's URL: also requests per read)
  ttfbopen DIR COUNT LEN            open DIR/fresh-I.bin (I < COUNT), pread LEN at an offset:
                                    median ms from open to data
  reqs URL                          requests the bench server has served, by operation
  reqdiff BEFORE AFTER N            requests between two `reqs` lines, per N operations
  fio JSONFILE                      iops/mbps/p50/p99 from fio --output-format=json
  cpu PID                           utime+stime seconds of PID (from /proc/PID/stat)
  hwm PID                           peak RSS (VmHWM) of PID in MiB
  report RESULTS.tsv                median table with ratios and target checks
"""
import json
import os
import urllib.request
import random
import statistics
import sys
import threading
import time


def mktree(d, n):
    rnd = random.Random(42)
    n = int(n)
    for i in range(n):
        sub = os.path.join(d, "d%03d" % (i // 64))
        os.makedirs(sub, exist_ok=True)
        size = rnd.randint(4, 64) * 1024
        with open(os.path.join(sub, "f%05d.bin" % i), "wb") as f:
            f.write(rnd.randbytes(size))
    print("files=%d" % n)


def mklist(d, n):
    os.makedirs(d, exist_ok=True)
    for i in range(int(n)):
        with open(os.path.join(d, "obj%06d" % i), "wb") as f:
            f.write(b"x")
    print("files=%s" % n)


def interleave(path, chunk, budget="0"):
    chunk, budget = int(chunk), float(budget)
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    half = size // 2
    total = [0, 0]
    t = time.monotonic()
    # With a budget (seconds), both readers stop when it runs out: MB/s of what they got, so a
    # peer at 3 MB/s does not hold a 1 GiB run up for minutes.
    stop = t + budget if budget > 0 else float("inf")

    def reader(idx, start, end):
        off = start
        while off < end and time.monotonic() < stop:
            b = os.pread(fd, min(chunk, end - off), off)
            if not b:
                break
            off += len(b)
            total[idx] += len(b)

    th = [threading.Thread(target=reader, args=(0, 0, half)),
          threading.Thread(target=reader, args=(1, half, size))]
    for x in th:
        x.start()
    for x in th:
        x.join()
    secs = time.monotonic() - t
    os.close(fd)
    n = sum(total)
    print("bytes=%d secs=%.3f mbps=%.1f" % (n, secs, n / secs / 1e6))


def ttfb(path, count, length, url=None):
    count, length = int(count), int(length)
    rnd = random.Random(7)
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    before = server_reqs(url) if url else None
    lat = []
    for _ in range(count):
        off = rnd.randrange(0, max(1, size - length))
        t = time.monotonic()
        os.pread(fd, length, off)
        lat.append(time.monotonic() - t)
    extra = ""
    if url:
        # Read-ahead a read started may still be arriving; it counts for the reads.
        time.sleep(0.5)
        d = parse_reqs(server_reqs(url), before)
        extra = " reqs_per_read=%.2f %s" % (d["total"] / count, fmt_reqs(d))
    os.close(fd)
    print("median_ms=%.2f%s" % (statistics.median(lat) * 1e3, extra))


def ttfbopen(d, count, length):
    count, length = int(count), int(length)
    rnd = random.Random(11)
    lat = []
    for i in range(count):
        path = os.path.join(d, "fresh-%d.bin" % i)
        t = time.monotonic()
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        os.pread(fd, length, rnd.randrange(0, max(1, size - length)))
        lat.append(time.monotonic() - t)
        os.close(fd)
    print("median_ms=%.2f" % (statistics.median(lat) * 1e3))


def server_reqs(url):
    with urllib.request.urlopen(url.rstrip("/") + "/_bench/requests", timeout=10) as r:
        return r.read().decode().strip()


def parse_reqs(after, before=None):
    a = dict(kv.split("=") for kv in after.split())
    b = dict(kv.split("=") for kv in before.split()) if before else {}
    return {k: int(v) - int(b.get(k, 0)) for k, v in a.items()}


def fmt_reqs(d):
    return "by_op=" + ",".join("%s:%d" % (k, v) for k, v in d.items() if k != "total" and v)


def reqs(url):
    print(server_reqs(url))


def reqdiff(before, after, n):
    d = parse_reqs(after, before)
    print("per=%.2f total=%d %s" % (d["total"] / float(n), d["total"], fmt_reqs(d)))


def fio(path):
    with open(path) as f:
        txt = f.read()
    # fio may print warnings before the JSON document.
    j = json.loads(txt[txt.index("{"):])
    r = j["jobs"][0]["read"]
    pct = r.get("clat_ns", {}).get("percentile", {})
    print("iops=%.1f mbps=%.1f p50_us=%.0f p99_us=%.0f io_bytes=%d" % (
        r["iops"], r["bw_bytes"] / 1e6, pct.get("50.000000", 0) / 1e3,
        pct.get("99.000000", 0) / 1e3, r["io_bytes"]))


def cpu(pid):
    with open("/proc/%s/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    # fields[11], [12] are utime, stime (14th and 15th of the full line).
    print("%.2f" % ((int(fields[11]) + int(fields[12])) / tick))


def hwm(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print("%.1f" % (int(line.split()[1]) / 1024))
                return
    print("0")


# (metric, unit, higher_is_better)
ROWS = [
    ("seq_cold", "MB/s", True), ("seq_warm", "MB/s", True),
    ("dc_first", "MB/s", True), ("dc_remount", "MB/s", True), ("dc_dir_mib", "MiB", False),
    ("rand4k_iops", "IOPS", True), ("rand4k_p50", "us", False), ("rand4k_p99", "us", False),
    ("rand256k_mbps", "MB/s", True), ("rand256k_p50", "us", False), ("rand256k_p99", "us", False),
    ("rand1m_mbps", "MB/s", True), ("rand1m_p50", "us", False), ("rand1m_p99", "us", False),
    ("interleave", "MB/s", True), ("seq_write", "MB/s", True),
    ("cp_tree", "s", False), ("cp_tree_ret", "s", False), ("ls_l", "s", False),
    ("ffprobe", "s", False), ("seek_frame", "s", False), ("ttfb_seek", "ms", False),
    ("ttfb_open", "ms", False), ("rq_cp_file", "req", False), ("rq_open_read", "req", False),
    ("rq_seek_read", "req", False), ("rq_ls_l", "req", False),
    ("peak_rss", "MiB", False), ("cpu_read_gib", "s/GiB", False),
    ("cpu_write_gib", "s/GiB", False), ("cpu_per_gib", "s/GiB", False),
    ("srv_cpu_gib", "s/GiB", False),
]
CAPPED = ("seq_cold", "interleave", "seq_write")
HIGHER_IS_BETTER = {m for m, _, hib in ROWS if hib}
PEERS = ["direct", "local", "byosfs", "byosfs-noposix", "byosfs-disk", "byosfs-wb", "byosfs-nosum", "byosfs-sum",
         "byosfs-metrics", "rclone-off", "rclone-full", "s3fs"]
# byosfs variants and references: not peers in the ratios.
BYOSFS_VARIANTS = ("byosfs", "byosfs-noposix", "byosfs-disk", "byosfs-wb", "byosfs-nosum", "byosfs-sum", "byosfs-metrics",
                   "direct", "local")


def parse(v):
    """A recorded value: a number, ("timeout", limit) or "fail" (see `timed` in bench.sh)."""
    if v.startswith("timeout:"):
        return ("timeout", float(v.split(":", 1)[1]))
    try:
        return float(v)
    except ValueError:
        return "fail"


def report(path):
    vals, bad = {}, {}
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 4 or p[3] in ("", "nan"):
                continue
            v = parse(p[3])
            if isinstance(v, float):
                vals.setdefault((p[0], p[1]), []).append(v)
            else:
                bad.setdefault((p[0], p[1]), []).append(v)
    med = {k: statistics.median(v) for k, v in vals.items()}
    # A cell with no successful run: ">limit" if it timed out (for times, the limit is a lower
    # bound on the real figure and is used as such in ratios), else "fail".
    shown = {}
    for k, v in bad.items():
        if k in med:
            continue
        limits = [x[1] for x in v if isinstance(x, tuple)]
        if limits and k[1] in HIGHER_IS_BETTER:
            shown[k] = "t/o"
        else:
            shown[k] = (">%s" % fmt(max(limits))) if limits else "fail"
        if limits and k[1] not in HIGHER_IS_BETTER:
            med[k] = max(limits)
    runs = {k: len(v) for k, v in vals.items()}
    peers = [p for p in PEERS if any(k[0] == p for k in list(med) + list(shown))]
    hdr = "%-14s %-6s" % ("metric", "unit") + "".join("%13s" % p for p in peers) + \
        "%10s %10s  %s" % ("byo/dir", "byo/peer", "note")
    out = [hdr, "-" * len(hdr)]
    for m, unit, hib in ROWS:
        row = {p: med.get((p, m)) for p in peers}
        if all(v is None for v in row.values()):
            continue
        cells = "".join("%13s" % (shown.get((p, m)) or ("-" if row[p] is None else fmt(row[p])))
                        for p in peers)
        b, d = row.get("byosfs"), row.get("direct")
        others = [row[p] for p in peers if p not in BYOSFS_VARIANTS and row[p] is not None]
        best = (max(others) if hib else min(others)) if others else None
        r_dir = "%10s" % (fmt(b / d) if b is not None and d else "-")
        r_peer = "%10s" % (fmt(b / best) if b is not None and best else "-")
        note = ""
        fuse = [v for p, v in row.items() if p != "direct" and v is not None]
        # Only where direct is a ceiling (whole-object streaming at the same concurrency):
        # random rows compare against exact-size GETs that no cache can beat.
        if m in CAPPED and d and fuse and max(fuse) >= 0.9 * d:
            note = "server/loopback caps (direct %s)" % fmt(d)
        out.append("%-14s %-6s%s%s %s  %s" % (m, unit, cells, r_dir, r_peer, note))
    nruns = sorted(set(runs.values()))
    out.append("")
    out.append("median of %s run(s) per cell; ratios are byosfs/direct and byosfs/best peer "
               "(peer = rclone/s3fs; for s, ms, us, MiB, s/GiB lower is better); "
               ">N: hit the N s bound in every run (N counts as its time in ratios); "
               "t/o: timed out; fail: the operation failed (see target/bench-cache/ops.log)" %
               "/".join(str(x) for x in nruns))
    out.extend(targets(med))
    rtt = os.environ.get("BENCH_RTT_MS", "")
    if rtt:
        out.extend(wan_targets(med, float(rtt)))
    print("\n".join(out))


def wan_targets(med, rtt):
    """The targets of issue 26 at this round-trip time."""
    g = lambda p, m: med.get((p, m))
    peers = ["rclone-off", "rclone-full", "s3fs"]
    res = ["", "targets (issue 26, RTT %g ms):" % rtt]

    def chk(name, ok, detail):
        res.append("  [%s] %s: %s" % ("PASS" if ok else "MISS", name, detail))

    b, d = g("byosfs", "cp_tree"), g("direct", "cp_tree")
    if b is not None and d:
        chk("cp -r durable <= 1.2x direct one PUT at a time", b <= 1.2 * d,
            "%s vs %s s (%.2fx)" % (fmt(b), fmt(d), b / d))
    b = g("byosfs", "ttfb_seek")
    if b is not None:
        lim = 1.2 * rtt + 2
        chk("64 KiB read at a new offset of an open file <= 1.2 RTT + 2 ms", b <= lim,
            "%s vs %s ms" % (fmt(b), fmt(lim)))
    b = g("byosfs", "ttfb_open")
    if b is not None:
        lim = 2.2 * rtt + 2
        chk("64 KiB read after a fresh open <= 2.2 RTT + 2 ms", b <= lim, "%s vs %s ms" % (fmt(b), fmt(lim)))
    b = g("byosfs", "ls_l")
    o = [g(p, "ls_l") for p in peers if g(p, "ls_l") is not None]
    if b is not None and o:
        chk("ls -l ahead of every peer", b < min(o), "%s vs best peer %s s" % (fmt(b), fmt(min(o))))
    b, d = g("byosfs", "seq_cold"), g("direct", "seq_cold")
    o = [g(p, "seq_cold") for p in peers if g(p, "seq_cold") is not None]
    if b is not None and d and o:
        chk("cold seq read >= 0.8x direct and ahead of every peer", b >= 0.8 * d and b > max(o),
            "%s vs direct %s, best peer %s MB/s" % (fmt(b), fmt(d), fmt(max(o))))
    return res


def targets(med):
    g = lambda p, m: med.get((p, m))
    peers = ["rclone-off", "rclone-full", "s3fs"]

    def best(m, hib):
        v = [g(p, m) for p in peers if g(p, m) is not None]
        return (max(v) if hib else min(v)) if v else None

    res = ["", "targets (issue 5):"]

    def chk(name, ok, detail):
        if ok is None:
            res.append("  [ ?  ] %s: %s" % (name, detail))
        else:
            res.append("  [%s] %s: %s" % ("PASS" if ok else "MISS", name, detail))

    b = g("byosfs", "seq_cold")
    d, bp = g("direct", "seq_cold"), best("seq_cold", True)
    if b is not None and d and bp:
        chk("cold seq read >= 0.8x direct and >= best peer", b >= 0.8 * d and b >= bp,
            "%s vs direct %s, best peer %s MB/s" % (fmt(b), fmt(d), fmt(bp)))
    w = g("byosfs", "seq_warm")
    if w is not None:
        chk("warm seq read >= 1500 MB/s", w >= 1500, "%s MB/s" % fmt(w))
    b, d, bp = g("byosfs", "seq_write"), g("direct", "seq_write"), best("seq_write", True)
    if b is not None and d and bp:
        chk("seq write >= 0.8x direct and >= best peer", b >= 0.8 * d and b >= bp,
            "%s vs direct %s, best peer %s MB/s" % (fmt(b), fmt(d), fmt(bp)))
    for m, name in (("seek_frame", "time to frame after seek"), ("ttfb_seek", "first byte after seek"),
                    ("ls_l", "ls -l")):
        b, bp = g("byosfs", m), best(m, False)
        if b is not None and bp:
            chk("%s <= best peer" % name, b <= bp, "%s vs %s" % (fmt(b), fmt(bp)))
    f, s, held, cap = (g("byosfs", m) for m in ("dc_first", "dc_remount", "dc_dir_mib", "dc_cap_mib"))
    if f and s is not None:
        chk("disk cache: cold read after a remount >= 5x the first (issue 26)", s >= 5 * f,
            "%s vs %s MB/s (%sx)" % (fmt(s), fmt(f), fmt(s / f)))
    if held is not None and cap:
        chk("disk cache directory <= its cap (issue 26)", held <= cap, "%s MiB vs %s MiB" % (fmt(held), fmt(cap)))
    r = g("byosfs", "peak_rss")
    if r is not None:
        budget = float(os.environ.get("BENCH_RSS_BUDGET_MIB", "868"))
        chk("peak RSS <= cache + write budgets + 100 MiB", r <= budget,
            "%s MiB vs %s MiB" % (fmt(r), fmt(budget)))
    # "CPU per GiB read and written": each direction against the best peer in it, since a
    # cheap direction must not hide an expensive one in the combined figure.
    for m, name in (("cpu_read_gib", "read"), ("cpu_write_gib", "written")):
        b, bp = g("byosfs", m), best(m, False)
        if b is not None and bp:
            chk("CPU per GiB %s <= 0.5x best peer" % name, b <= 0.5 * bp,
                "%s vs %s s/GiB" % (fmt(b), fmt(bp)))
    # Issue 20: serving metrics (endpoint on, scraped every second) costs at most 3 % CPU.
    for m, name in (("cpu_read_gib", "read"), ("cpu_write_gib", "written")):
        on, off = g("byosfs-metrics", m), g("byosfs", m)
        if on is not None and off:
            chk("CPU per GiB %s with metrics on <= 1.03x off" % name, on <= 1.03 * off,
                "%s vs %s s/GiB (%+.1f %%)" % (fmt(on), fmt(off), 100 * (on / off - 1)))
    # Issue 22: upload checksums (CRC32C per body, unsigned payloads) cost at most 0.1 s of CPU
    # per GiB written.
    on, off = g("byosfs-sum", "cpu_write_gib"), g("byosfs-nosum", "cpu_write_gib")
    if on is not None and off is not None:
        chk("upload checksums cost <= 0.1 s CPU per GiB written", on - off <= 0.1,
            "%s vs %s s/GiB (%+.2f)" % (fmt(on), fmt(off), on - off))
    return res


def fmt(x):
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"mktree": mktree, "mklist": mklist, "interleave": interleave, "ttfb": ttfb, "fio": fio,
     "cpu": cpu, "hwm": hwm, "report": report, "ttfbopen": ttfbopen, "reqs": reqs,
     "reqdiff": reqdiff}[cmd](*args)
