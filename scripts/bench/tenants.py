#!/usr/bin/env python3
"""Config generator for scripts/bench-tenants.sh (issue 27).

  tenants.py config OUT N OWN ENDPOINT [--overlaps K] [--tenants-dir DIR]
  tenants.py mount BYOSFS CONFIG MNT LOG TIMEOUT
  tenants.py mem PID

Writes a byosfs config to OUT: N tenants on one default S3 backend (bucket "platform",
each tenant under its own "<name>/" folder) plus OWN tenants with a backend of their own
(`[backends.own-I]`, bucket "own", prefix "c-I/"; all on one endpoint with one set of
credentials, so they share one client). Credentials come from the environment variables
BENCH_AK / BENCH_SK. With --overlaps K, the last K default-backend tenants get a prefix that
nests inside the folder of one of the first K (each one an error). With --tenants-dir DIR, the OWN
tenants are written one file each into DIR instead of the main file.
"""
import os
import subprocess
import sys
import time


def config(out, n, own, endpoint, overlaps=0, tenants_dir=None):
    n, own, overlaps = int(n), int(own), int(overlaps)
    lines = [
        "[mount]",
        "fs_name = \"byosfs-tenants\"",
        "",
        "[defaults]",
        "backend = \"platform\"",
        "",
    ]
    if tenants_dir:
        lines += ["tenants_dir = %r" % tenants_dir, ""]
    creds = 'credentials = { env = { access_key_id = "BENCH_AK", secret_access_key = "BENCH_SK" } }'
    lines += [
        "[backends.platform]",
        "type = \"s3\"",
        "endpoint = %r" % endpoint,
        "region = \"us-east-1\"",
        "force_path_style = true",
        "bucket = \"platform\"",
        creds,
        "",
    ]
    for i in range(own):
        lines += [
            "[backends.own-%d]" % i,
            "type = \"s3\"",
            "endpoint = %r" % endpoint,
            "region = \"us-east-1\"",
            "force_path_style = true",
            "bucket = \"own\"",
            "prefix = \"c-%d/\"" % i,
            creds,
            "",
        ]
    for i in range(n):
        lines += ["[[tenants]]", "name = \"t%06d\"" % i]
        if i >= n - overlaps:
            # The last K tenants nest inside the folder of one of the first K: an overlap the
            # validator must report at the later tenant.
            lines.append("prefix = \"t%06d/sub/\"" % (i - (n - overlaps)))
        lines.append("")
    own_entries = [("own-%05d" % i, "own-%d" % i) for i in range(own)]
    if tenants_dir:
        os.makedirs(tenants_dir, exist_ok=True)
        for name, backend in own_entries:
            with open(os.path.join(tenants_dir, name + ".toml"), "w") as f:
                f.write("name = \"%s\"\nbackend = \"%s\"\n" % (name, backend))
    else:
        for name, backend in own_entries:
            lines += ["[[tenants]]", "name = \"%s\"" % name, "backend = \"%s\"" % backend, ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))


def mount(byosfs, cfg, mnt, log, timeout):
    """Start `byosfs mount` in its own session and wait until the root of MNT is a FUSE mount
    that answers stat(): prints `pid=P ready_s=S` (ready_s=timeout when it never came up;
    the process is left running for the caller to stop by its pid either way)."""
    mnt = os.path.realpath(mnt)
    dev = os.stat(mnt).st_dev
    with open(log, "ab") as err:
        t0 = time.monotonic()
        p = subprocess.Popen([byosfs, "mount", "--config", cfg, mnt], stdin=subprocess.DEVNULL,
                             stdout=err, stderr=err, start_new_session=True,
                             env=dict(os.environ, RUST_LOG="byosfs=warn"))
    deadline = t0 + float(timeout)
    ready = None
    # Bounded by the deadline; 2 ms between polls keeps the error of the figure small.
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if os.stat(mnt).st_dev != dev:
                ready = time.monotonic() - t0
                break
        except OSError:
            pass
        time.sleep(0.002)
    print("pid=%d ready_s=%s" % (p.pid, "%.3f" % ready if ready is not None else "timeout"))


def mem(pid):
    """VmRSS and VmHWM of PID in MiB."""
    vals = {}
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0]) / 1024
    print("rss_mib=%.1f hwm_mib=%.1f" % (vals.get("VmRSS", 0), vals.get("VmHWM", 0)))


def main(argv):
    if len(argv) >= 2 and argv[1] == "mount":
        mount(*argv[2:])
        return 0
    if len(argv) >= 2 and argv[1] == "mem":
        mem(*argv[2:])
        return 0
    if len(argv) < 2 or argv[1] != "config":
        print(__doc__, file=sys.stderr)
        return 2
    args, opts, i = [], {}, 2
    while i < len(argv):
        if argv[i].startswith("--"):
            opts[argv[i][2:].replace("-", "_")] = argv[i + 1]
            i += 2
        else:
            args.append(argv[i])
            i += 1
    config(*args, **opts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
