#!/usr/bin/env bash
# `scripts/bench.sh --only migrate` (issue 21): `byosfs migrate` (streamed: ranged GETs into
# multipart uploads) against `rclone copy` of the same tree between the same two loopback
# S3 servers (s3s-fs), in one run. 1 GiB in 1,000 objects (--quick: 64 MiB in 100). Prints
# both times, the ratio, and byosfs's peak RSS against write memory + 100 MiB.
#
# Like for like on the wire: rclone sends its PUTs over this plain-HTTP link as
# UNSIGNED-PAYLOAD with a Content-MD5 taken from the source's ETag (checked with a header
# dump, rclone 1.60), so the compared byosfs run has `payload_signing = "never"` on the target
# and sends the same. A second byosfs run with the default ("auto": SigV4 hashes every body
# over plain HTTP, and the server checks it) is shown for reference, not compared.
#
# Called by bench.sh after the build: migrate.sh BYOSFS S3SERVER QUICK. Every command is
# bounded by `timeout`; the two servers are stopped by PID on exit.
set -euo pipefail
BYOSFS=$1 S3SERVER=$2 QUICK=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
if [ "$QUICK" = 1 ]; then N=100; TOTAL_MIB=64; else N=1000; TOTAL_MIB=1024; fi
WMEM_MIB=256

WORK=$(mktemp -d /var/tmp/byosfs-bench-migrate.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
  case ${DATA:-} in /dev/shm/byosfs-bench-migrate.*) rm -rf "$DATA" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both servers keep their objects on tmpfs when there is room (source + three copies).
if [ "$(df --output=avail -k /dev/shm | tail -1)" -gt $((TOTAL_MIB * 1024 * 5)) ]; then
  DATA=$(mktemp -d /dev/shm/byosfs-bench-migrate.XXXXXX)
else
  DATA=$WORK/data
fi
export BENCH_AK=bench-ak BENCH_SK="bench-sk-$RANDOM$RANDOM"
start_server() { # $1 name, then buckets
  local name=$1; shift
  local args=()
  for b in "$@"; do args+=(--bucket "$b"); done
  mkdir -p "$DATA/$name"
  "$S3SERVER" --root "$DATA/$name" --endpoint-file "$WORK/$name.endpoint" "${args[@]}" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/$name.endpoint" ] && return 0; sleep 0.1; done
  die "server $name did not start"
}
start_server a src
start_server b rcopy bmigrate bsigned
EP_A=$(cat "$WORK/a.endpoint") EP_B=$(cat "$WORK/b.endpoint")
log "servers: source $EP_A, target $EP_B"
for r in A B; do
  ep=$EP_A; [ $r = B ] && ep=$EP_B
  export "RCLONE_CONFIG_${r}_TYPE=s3" "RCLONE_CONFIG_${r}_PROVIDER=Other" "RCLONE_CONFIG_${r}_ENDPOINT=$ep" \
    "RCLONE_CONFIG_${r}_ACCESS_KEY_ID=$BENCH_AK" "RCLONE_CONFIG_${r}_SECRET_ACCESS_KEY=$BENCH_SK" \
    "RCLONE_CONFIG_${r}_FORCE_PATH_STYLE=true" "RCLONE_CONFIG_${r}_REGION=us-east-1"
done

# The tree: N objects summing to TOTAL_MIB, sizes 0 to ~2 MiB, three of them above the 8 MiB
# part size; generated once per size and kept in target/bench-cache.
TREE=$ROOT/target/bench-cache/migrate-tree-$N
if [ ! -d "$TREE" ]; then
  log "generating $TREE (once)"
  python3 - "$TREE.tmp" "$N" "$TOTAL_MIB" <<'PY'
import os, random, sys
d, n, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) << 20
rnd = random.Random(21)
big = [9 << 20, 12 << 20, 17 << 20] if total >= (256 << 20) else [9 << 20]
rest = total - sum(big)
small = [rnd.random() for _ in range(n - len(big))]
scale = rest / sum(small)
sizes = [int(s * scale) for s in small]
sizes[-1] += rest - sum(sizes)
for i, size in enumerate(big + sizes):
    sub = os.path.join(d, "d%02d" % (i % 37), "odd name %d" % (i % 5))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%05d.bin" % i), "wb") as f:
        f.write(rnd.randbytes(size))
PY
  mv "$TREE.tmp" "$TREE"
fi
log "uploading the tree to the source"
timeout 900 env -u AWS_CA_BUNDLE rclone copy "$TREE" A:src --transfers 8 2>>"$WORK/rclone.log" ||
  { tail -20 "$WORK/rclone.log" >&2; die "rclone could not upload the tree"; }

CFG=$WORK/migrate.toml
backend() { # name endpoint bucket [extra line]
  cat <<EOF2
[backends.$1]
type = "s3"
provider = "custom"
endpoint = "$2"
region = "us-east-1"
force_path_style = true
bucket = "$3"
credentials = { env = { access_key_id = "BENCH_AK", secret_access_key = "BENCH_SK" } }
${4:-}
EOF2
}
{
  printf '[write]\nmemory = "%sMiB"\nstaging_dir = "%s"\n' "$WMEM_MIB" "$WORK/staging"
  backend a "$EP_A" src
  backend b "$EP_B" bmigrate 'payload_signing = "never"'
  backend bs "$EP_B" bsigned
  printf '[[tenants]]\nname = "t"\nbackend = "a"\nprefix = ""\n'
} >"$CFG"

secs() { echo "$2 - $1" | bc -l; }
sync
log "rclone copy A:src B:rcopy"
t0=$(date +%s.%N)
timeout 1800 env -u AWS_CA_BUNDLE rclone copy A:src B:rcopy 2>>"$WORK/rclone.log" ||
  { tail -20 "$WORK/rclone.log" >&2; die "rclone copy failed"; }
t1=$(date +%s.%N)
RCLONE_S=$(secs "$t0" "$t1")
sync
log "byosfs migrate --tenant t --to b"
t0=$(date +%s.%N)
RUST_LOG=byosfs=warn timeout 1800 /usr/bin/time -f '%M' -o "$WORK/rss" \
  "$BYOSFS" migrate --config "$CFG" --tenant t --to b --prefix "" --json >"$WORK/report.json" \
  2>>"$WORK/migrate.log" || { tail -20 "$WORK/migrate.log" >&2; die "byosfs migrate failed"; }
t1=$(date +%s.%N)
MIGRATE_S=$(secs "$t0" "$t1")
RSS_MIB=$(( $(tail -1 "$WORK/rss") / 1024 ))
COPIED=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["copied"], len(r["failed"]))' "$WORK/report.json")
[ "$COPIED" = "$N 0" ] || die "migrate copied/failed: $COPIED, expected $N 0"
sync
log "byosfs migrate --tenant t --to bs (payload_signing auto: signed, for reference)"
t0=$(date +%s.%N)
RUST_LOG=byosfs=warn timeout 1800 "$BYOSFS" migrate --config "$CFG" --tenant t --to bs --prefix "" --json \
  >"$WORK/report-signed.json" 2>>"$WORK/migrate.log" || { tail -20 "$WORK/migrate.log" >&2; die "signed migrate failed"; }
t1=$(date +%s.%N)
SIGNED_S=$(secs "$t0" "$t1")
RC_N=$(find "$DATA/b/rcopy" -type f ! -name '.*' | wc -l)
[ "$RC_N" -ge "$N" ] || die "rclone copied $RC_N of $N"

BYTES=$((TOTAL_MIB << 20))
mbps() { echo "scale=1; $BYTES / $1 / 1000000" | bc -l; }
RATIO=$(echo "scale=2; $RCLONE_S / $MIGRATE_S" | bc -l)
BUDGET=$((WMEM_MIB + 100))
speed=MISS; [ "$(echo "$MIGRATE_S <= $RCLONE_S" | bc -l)" = 1 ] && speed=PASS
rss=MISS; [ "$RSS_MIB" -le "$BUDGET" ] && rss=PASS
printf '\n| migrate %s MiB in %s objects | byosfs migrate | rclone copy | rclone/byosfs | target |\n' "$TOTAL_MIB" "$N"
printf '|---|---|---|---|---|\n'
printf '| time | %.1f s (%s MB/s) | %.1f s (%s MB/s) | %s | byosfs <= rclone: %s |\n' \
  "$MIGRATE_S" "$(mbps "$MIGRATE_S")" "$RCLONE_S" "$(mbps "$RCLONE_S")" "$RATIO" "$speed"
printf '| byosfs peak RSS | %s MiB | | | <= %s MiB: %s |\n' "$RSS_MIB" "$BUDGET" "$rss"
printf '| time, payload_signing auto (signed) | %.1f s (%s MB/s) | | %.2f | reference |\n' \
  "$SIGNED_S" "$(mbps "$SIGNED_S")" "$(echo "scale=2; $RCLONE_S / $SIGNED_S" | bc -l)"
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
