#!/usr/bin/env bash
# Side-by-side benchmark (issue 5): direct S3 access, byosfs, rclone mount (vfs cache off and
# full) and s3fs against one loopback S3 server (s3s-fs). Prints one table of medians with the
# ratios byosfs/direct and byosfs/best-peer, and the issue's targets as PASS/MISS.
#
#   scripts/bench.sh [--quick] [--runs N] [--peers "direct byosfs rclone-off rclone-full s3fs"]
#                    (peer byosfs-noposix: byosfs with posix_metadata = false;
#                     byosfs-nosum / byosfs-sum: unsigned payloads with checksum "none" /
#                     "crc32c", for the CPU cost of upload checksums, issue 22;
#                     peer byosfs-wb: byosfs with write_back = true;
#                     peer byosfs-metrics: byosfs with [metrics] listen set, scraped every second)
#                    [--only read|write|meta|migrate] [--no-install] [--out FILE]
#                    [--rtt MS [--rate MBIT]]
#
# --rtt puts the server behind a simulated wide-area link (examples/wanproxy.rs: each
# direction delayed by MS/2 per chunk in flight, a new connection costs one round trip, and
# --rate caps each direction in Mbit/s); every peer and the direct client go through it,
# setup uploads do not. With --rtt the sizes are those of issue 26 (256 MiB object, 200
# files, 10,000 listed) and the table gains requests per operation, counted at the server.
#
# --only runs the read rows (1, 2, 5, 7, ls -l) or the write rows (3, cp -r) alone, for work
# on one path, or the metadata rows (ls -l, cp -r) alone, e.g. to compare byosfs with
# byosfs-noposix; the targets of rows not run show as missing. --only migrate runs the
# `byosfs migrate` vs `rclone copy` row alone (scripts/bench/migrate.sh, two servers).
#
# Needs root (drop_caches, apt-get). Every command is bounded by `timeout`; mounts and
# processes started here are stopped by PID on exit. Generated inputs (mp4, file tree) are
# kept in target/bench-cache so a second run does not regenerate them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
H="python3 $ROOT/scripts/bench/helpers.py"
QUICK=0
RUNS=3
PEERS="direct byosfs rclone-off rclone-full s3fs"
INSTALL=1
OUT=""
ONLY=all
RTT=""
RATE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS=$2; shift ;;
    --peers) PEERS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --no-install) INSTALL=0 ;;
    --out) OUT=$2; shift ;;
    --rtt) RTT=$2; shift ;;
    --rate) RATE=$2; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

case "$ONLY" in all|read|write|meta|migrate) ;; *) echo "--only takes read, write, meta or migrate" >&2; exit 2 ;; esac
[[ -z $RTT || $RTT =~ ^[0-9]+$ ]] || { echo "--rtt takes whole milliseconds" >&2; exit 2; }
[[ $RATE =~ ^[0-9]+$ ]] || { echo "--rate takes whole Mbit/s" >&2; exit 2; }
# `meta` rows are part of read and write in a full run; `want meta` is their run alone.
want() { [ "$ONLY" = "$1" ] || { [ "$ONLY" = all ] && [ "$1" != meta ]; }; }

MIB=$((1 << 20))
# LIMIT bounds each metadata or media operation (ls, cp, ffprobe, one seek); a peer that runs
# into it is shown as ">LIMIT" instead of holding up the whole run.
if [ "$QUICK" = 1 ]; then
  BIG_MIB=64; WRITE_MIB=64; NFILES=200; NLIST=300; MP4_SECS=20; FIO_SECS=1; LIMIT=6; IL_SECS=3
else
  BIG_MIB=1024; WRITE_MIB=1024; NFILES=6400; NLIST=10000; MP4_SECS=200; FIO_SECS=5; LIMIT=120; IL_SECS=30
fi
if [ -n "$RTT" ]; then
  # Issue 26's sizes: at 20-80 ms a round trip per file or entry is what is measured, and
  # 6,400 files one PUT at a time would take minutes for every peer. 200 files one round
  # trip each take 16 s at 80 ms: quick mode's 6 s bound would cut that row.
  if [ "$QUICK" = 0 ]; then BIG_MIB=256; WRITE_MIB=256; NFILES=200; NLIST=10000; IL_SECS=5; FIO_SECS=3; fi
  LIMIT=60
fi
# Objects read once each after a fresh open (ttfb_open row): never looked up before.
NFRESH=5
# byosfs budgets: the RSS target is cache + write memory + 100 MiB.
CACHE_MIB=512; WMEM_MIB=256
export BENCH_RSS_BUDGET_MIB=$((CACHE_MIB + WMEM_MIB + 100))
# byosfs's payload_signing, and the direct client's: "auto" (byosfs's default) signs upload
# bodies over this plain-HTTP link, as rclone and s3fs do, so the table compares like with
# like. PAYLOAD_SIGNING=never models byosfs's default over HTTPS (TLS protects the bodies,
# no SHA-256 per byte) for byosfs and direct; the peers still sign.
PAYLOAD_SIGNING=${PAYLOAD_SIGNING:-auto}
case "$PAYLOAD_SIGNING" in auto|always|never) ;; *) echo "PAYLOAD_SIGNING must be auto, always or never" >&2; exit 2 ;; esac

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (drop_caches, apt-get)"

# ---------------------------------------------------------------------------- install + build
if [ "$INSTALL" = 1 ]; then
  need=()
  for p in fio:fio ffmpeg:ffmpeg rclone:rclone s3fs:s3fs fusermount3:fuse3 python3:python3; do
    command -v "${p%%:*}" >/dev/null 2>&1 || need+=("${p#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
# rclone and s3fs (libfuse2) call `fusermount`; fuse3's fusermount3 speaks the same protocol.
if ! command -v fusermount >/dev/null 2>&1; then
  ln -s "$(command -v fusermount3)" /usr/local/bin/fusermount
fi
log "building release binaries"
(cd "$ROOT" && cargo build --release --quiet --bin byosfs --example s3server --example s3direct --example wanproxy)
BYOSFS=$ROOT/target/release/byosfs
S3SERVER=$ROOT/target/release/examples/s3server
S3DIRECT=$ROOT/target/release/examples/s3direct
WANPROXY=$ROOT/target/release/examples/wanproxy
if [ "$ONLY" = migrate ]; then exec bash "$ROOT/scripts/bench/migrate.sh" "$BYOSFS" "$S3SERVER" "$QUICK"; fi

# ---------------------------------------------------------------------------- cleanup
WORK=$(mktemp -d /var/tmp/byosfs-bench.XXXXXX)
CACHE=$ROOT/target/bench-cache
mkdir -p "$CACHE"
rm -f "$CACHE/ops.log"
SERVER_PID=""
PROXY_PID=""
FS_PID=""
WSRC=""
DATA=""
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() {
  set +e
  # Lazy unmount first: a process blocked in the mount (state D) only returns once the
  # filesystem is gone, and bash runs this trap only after its foreground child returns.
  if mountpoint -q "$MNT"; then fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"; fi
  if [ -n "$FS_PID" ]; then
    kill "$FS_PID" 2>/dev/null; sleep 1; kill -9 "$FS_PID" 2>/dev/null
  fi
  [ -n "${SCRAPE_PID:-}" ] && kill "$SCRAPE_PID" 2>/dev/null
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
  wait 2>/dev/null
  [ -s "$WORK/ops.log" ] && cp "$WORK/ops.log" "$CACHE/ops.log"
  # Every run's figure per peer and row (the table shows medians only).
  [ -s "$WORK/results.tsv" ] && cp "$WORK/results.tsv" "$CACHE/results.tsv"
  rm -rf "$WORK"
  if [ -n "$WSRC" ]; then rm -f "$WSRC"; fi
  case $DATA in /dev/shm/byosfs-bench-s3.*) rm -rf "$DATA" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------- server
export BENCH_AK=bench-ak BENCH_SK="bench-sk-$RANDOM$RANDOM"
BUCKET=bench
# The server keeps its objects on tmpfs when there is room (the bench peaks at about 3x the
# object plus 1 GiB): this VM's disk writeback then slows no client's row. On disk, the
# server's part writes and CompleteMultipartUpload ran into dirty-page throttling that varied
# from run to run (completion 0.5-3.9 s for the same 1 GiB). Staging and cache directories of
# the filesystems under test stay on disk, where a user would put them.
if [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt $(((3 * BIG_MIB + 1024) * 1024 + 1048576)) ] \
  && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
  DATA=$(mktemp -d /dev/shm/byosfs-bench-s3.XXXXXX)
else
  DATA=$WORK/s3
  log "not enough tmpfs in /dev/shm: the server's objects go to disk ($DATA)"
fi
"$S3SERVER" --root "$DATA" --endpoint-file "$WORK/endpoint" --bucket "$BUCKET" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$WORK/endpoint" ] && break; sleep 0.1; done
[ -s "$WORK/endpoint" ] || die "S3 server did not start"
export BENCH_ENDPOINT
SERVER_ENDPOINT=$(cat "$WORK/endpoint")
BENCH_ENDPOINT=$SERVER_ENDPOINT
log "s3s-fs server at $SERVER_ENDPOINT (pid $SERVER_PID), data in $DATA"
if [ -n "$RTT" ]; then
  "$WANPROXY" --upstream "$SERVER_ENDPOINT" --rtt-ms "$RTT" --rate-mbit "$RATE" --endpoint-file "$WORK/proxy" &
  PROXY_PID=$!
  for _ in $(seq 100); do [ -s "$WORK/proxy" ] && break; sleep 0.1; done
  [ -s "$WORK/proxy" ] || die "link proxy did not start"
  BENCH_ENDPOINT=$(cat "$WORK/proxy")
  log "every peer through a link of RTT $RTT ms, rate $([ "$RATE" = 0 ] && echo unlimited || echo "$RATE Mbit/s") at $BENCH_ENDPOINT"
fi
direct() {
  if [ "$PAYLOAD_SIGNING" = never ]; then set -- --unsigned "$@"; fi
  timeout 600 "$S3DIRECT" --bucket "$BUCKET" "$@"
}
# Setup uploads go straight to the server: only measurements cross the link.
setup_direct() { BENCH_ENDPOINT=$SERVER_ENDPOINT direct "$@"; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }

# ---------------------------------------------------------------------------- inputs
log "setup: ${BIG_MIB} MiB object, mp4, $NFILES-file tree, $NLIST objects to list"
setup_direct put --key big.bin --size $((BIG_MIB * MIB)) >/dev/null
MP4=$CACHE/movie-${MP4_SECS}s.mp4
MP4_DUR=0
if want read; then
  if [ ! -s "$MP4" ]; then
    # ~20 Mbit/s of noise-bearing 720p: about 2.5 MB per second of video, so ~500 MB at 200 s.
    # ultrafast keeps generation near real time on 2 cores; a keyframe every 2 s as in streaming.
    log "generating $MP4 (once)"
    timeout 900 ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -t "$MP4_SECS" \
      -vf "noise=alls=12:allf=t" -c:v libx264 -preset ultrafast -b:v 20M -maxrate 20M -bufsize 40M \
      -g 60 -pix_fmt yuv420p -movflags +faststart "$MP4.tmp.mp4"
    mv "$MP4.tmp.mp4" "$MP4"
  fi
  setup_direct put --key movie.mp4 --file "$MP4" >/dev/null
  MP4_DUR=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$MP4")
fi
TREE=$CACHE/tree-$NFILES
if [ ! -d "$TREE" ]; then $H mktree "$TREE.tmp" "$NFILES" >/dev/null && mv "$TREE.tmp" "$TREE"; fi
# s3s-fs objects are plain files: the listing objects go straight into the bucket directory.
if want read || want meta; then $H mklist "$DATA/$BUCKET/list" "$NLIST" >/dev/null; fi
if want read; then
  for i in $(seq 0 $((NFRESH - 1))); do head -c $((4 * MIB)) "$DATA/$BUCKET/big.bin" >"$DATA/$BUCKET/fresh-$i.bin"; done
fi
# The bytes every client writes in row 3: the same patterned data for direct (read into memory
# before its clock starts) and for dd into each mount. On tmpfs, so dd's reads never wait on
# the disk or compete with the server's writes to it.
[ "$WRITE_MIB" -le "$BIG_MIB" ] || die "the write source is cut from the read object"
WSRC=$(mktemp /dev/shm/byosfs-bench-wsrc.XXXXXX)
head -c $((WRITE_MIB * MIB)) "$DATA/$BUCKET/big.bin" >"$WSRC"
if want read; then log "inputs ready: mp4 $(du -m "$MP4" | cut -f1) MB, ${MP4_DUR%.*} s"; else log "inputs ready"; fi

# ---------------------------------------------------------------------------- results
RES=$WORK/results.tsv
: >"$RES"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
  # Re-warm the server's copy so the cold rows measure the filesystem, not this disk.
  cat "$DATA/$BUCKET/big.bin" "$DATA/$BUCKET/movie.mp4" >/dev/null
}
# Run "$@" for at most $1 s; print the seconds it took, "timeout:$1", or "fail". Never fails
# itself: one peer's broken or hanging operation must not end the run (stderr goes to ops.log).
timed() {
  local lim=$1 t0 t1 rc=0
  shift
  t0=$(date +%s.%N)
  timeout -k 5 "$lim" "$@" >/dev/null 2>>"$WORK/ops.log" || rc=$?
  t1=$(date +%s.%N)
  case $rc in
    0) echo "$t1 - $t0" | bc -l ;;
    124|137) echo "timeout:$lim" ;;
    *) echo "$(date +%T) failed ($rc): $*" >>"$WORK/ops.log"; echo fail ;;
  esac
}
num() { [[ $1 =~ ^[0-9.]+$ ]]; }
# MB/s from bytes and a `timed` result (failures pass through).
mbps() { if num "$2"; then echo "scale=1; $1 / $2 / 1000000" | bc -l; else echo "$2"; fi; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Requests the server has served so far, by operation (one line of name=value pairs).
req_snap() { $H reqs "$SERVER_ENDPOINT"; }
# Record row $2 of peer $1, run $3: requests since snapshot $4, per $5 operations; the
# breakdown by operation goes to ops.log.
req_row() {
  local v
  v=$($H reqdiff "$4" "$(req_snap)" "$5")
  echo "requests $1 $2 run $3: $v" >>"$WORK/ops.log"
  record "$1" "$2" "$3" "$(field per <<<"$v")"
}

# ---------------------------------------------------------------------------- mounts
BYO_CFG=$WORK/byosfs.toml
# One tenant: give it the whole cache and write budget (the 50 % default share is for mounts
# shared by tenants; the peers have no such split).
cat >"$BYO_CFG" <<EOF
[mount]
tenant_share = 100
[cache]
memory = "${CACHE_MIB}MiB"
[write]
memory = "${WMEM_MIB}MiB"
staging_dir = "$WORK/staging"
[backends.s3]
type = "s3"
provider = "custom"
endpoint = "$BENCH_ENDPOINT"
region = "us-east-1"
force_path_style = true
bucket = "$BUCKET"
payload_signing = "$PAYLOAD_SIGNING"
credentials = { env = { access_key_id = "BENCH_AK", secret_access_key = "BENCH_SK" } }
[[tenants]]
name = "t"
backend = "s3"
prefix = ""
EOF
# The same tenant without per-object modes (peer byosfs-noposix): the cost of posix_metadata.
BYO_CFG_NOPOSIX=$WORK/byosfs-noposix.toml
{ cat "$BYO_CFG"; echo 'posix_metadata = false'; } >"$BYO_CFG_NOPOSIX"
# byosfs with the disk cache (issue 26), for the dc_* rows: room for the object twice.
BYO_CFG_DISK=$WORK/byosfs-disk.toml
sed "s|^\[cache\]\$|[cache]\ndisk_dir = \"$WORK/dcache\"\ndisk_size = \"$((2 * BIG_MIB))MiB\"|" "$BYO_CFG" >"$BYO_CFG_DISK"
# Unsigned payloads with and without upload checksums (peers byosfs-nosum, byosfs-sum): the
# CPU a CRC32C per body costs, without the SHA-256 of signing hiding it.
BYO_CFG_NOSUM=$WORK/byosfs-nosum.toml
BYO_CFG_SUM=$WORK/byosfs-sum.toml
sed 's/^payload_signing = .*/payload_signing = "never"\nchecksum = "none"/' "$BYO_CFG" >"$BYO_CFG_NOSUM"
sed 's/^payload_signing = .*/payload_signing = "never"\nchecksum = "crc32c"/' "$BYO_CFG" >"$BYO_CFG_SUM"
# The same tenant with crash-safe write-back (peer byosfs-wb): close() returns once staged.
BYO_CFG_WB=$WORK/byosfs-wb.toml
{ cat "$BYO_CFG"; echo 'write_back = true'; } >"$BYO_CFG_WB"
# The same with the Prometheus endpoint on (peer byosfs-metrics), scraped once a second while
# mounted: the cost of serving metrics. Counting itself is always on (`byosfs status` reads the
# same counters), so this pair measures the endpoint and its scrapes; the target is CPU per GiB
# within 3 % of byosfs.
METRICS_ADDR=127.0.0.1:19464
BYO_CFG_METRICS=$WORK/byosfs-metrics.toml
{ cat "$BYO_CFG"; printf '[metrics]\nlisten = "%s"\n' "$METRICS_ADDR"; } >"$BYO_CFG_METRICS"
SCRAPE_PID=""
printf '%s:%s\n' "$BENCH_AK" "$BENCH_SK" >"$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
  RCLONE_CONFIG_BENCH_ENDPOINT=$BENCH_ENDPOINT RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$BENCH_AK \
  RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$BENCH_SK RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
  RCLONE_CONFIG_BENCH_REGION=us-east-1

# Mount $1 on $MNT; sets FS_PID and FS_DIR (where the bucket's objects appear).
mount_fs() {
  local peer=$1
  rm -rf "$WORK/rclone-cache" "$WORK/staging"
  case $peer in
    byosfs|byosfs-noposix|byosfs-disk|byosfs-nosum|byosfs-sum|byosfs-wb|byosfs-metrics)
      local cfg=$BYO_CFG
      [ "$peer" = byosfs-noposix ] && cfg=$BYO_CFG_NOPOSIX
      [ "$peer" = byosfs-disk ] && cfg=$BYO_CFG_DISK
      [ "$peer" = byosfs-nosum ] && cfg=$BYO_CFG_NOSUM
      [ "$peer" = byosfs-sum ] && cfg=$BYO_CFG_SUM
      [ "$peer" = byosfs-wb ] && cfg=$BYO_CFG_WB
      [ "$peer" = byosfs-metrics ] && cfg=$BYO_CFG_METRICS
      RUST_LOG=byosfs=warn "$BYOSFS" mount --config "$cfg" "$MNT" 2>>"$WORK/byosfs.log" &
      FS_DIR=$MNT/t ;;
    rclone-off|rclone-full)
      # rclone's SDK refuses AWS_CA_BUNDLE over plain http ("unsupported transport").
      env -u AWS_CA_BUNDLE rclone mount bench:"$BUCKET" "$MNT" --vfs-cache-mode "${peer#rclone-}" \
        --cache-dir "$WORK/rclone-cache" 2>>"$WORK/rclone.log" &
      FS_DIR=$MNT ;;
    s3fs)
      s3fs "$BUCKET" "$MNT" -f -o "url=$BENCH_ENDPOINT,use_path_request_style,passwd_file=$WORK/s3fs.passwd,endpoint=us-east-1" \
        >>"$WORK/s3fs.log" 2>&1 &
      FS_DIR=$MNT ;;
  esac
  FS_PID=$!
  if [ "$peer" = byosfs-metrics ]; then
    # Bounded: at most one scrape a second for an hour, each at most 5 s; stopped by PID.
    ( for _ in $(seq 3600); do sleep 1; curl -sf -m 5 "http://$METRICS_ADDR/metrics" >/dev/null || true; done ) &
    SCRAPE_PID=$!
  fi
  for _ in $(seq 200); do mountpoint -q "$MNT" && [ -e "$FS_DIR/big.bin" ] && return 0; sleep 0.1; done
  tail -n 20 "$WORK"/*.log >&2 || true
  die "$peer did not mount"
}
umount_fs() {
  local peer=$1 run=$2
  HWM=$($H hwm "$FS_PID" 2>/dev/null || echo 0)
  PEAK=$(echo "if ($HWM > ${PEAK:-0}) $HWM else ${PEAK:-0}" | bc -l)
  if [ -n "$SCRAPE_PID" ]; then
    # The last scrape before unmounting shows the endpoint answered during the run.
    curl -sf -m 5 "http://$METRICS_ADDR/metrics" | grep -q '^byosfs_bytes_served_total' \
      || log "WARNING: byosfs-metrics: /metrics did not answer"
    stop_pid "$SCRAPE_PID" 1; SCRAPE_PID=""
  fi
  fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
  stop_pid "$FS_PID" 3
  FS_PID=""
}
cpu_now() { $H cpu "$FS_PID"; }
# Wait up to $2 s for PID $1 to exit, then TERM it, then KILL it: a filesystem process still
# serving a process that a timeout interrupted (blocked in the mount) may never exit alone.
stop_pid() {
  local pid=$1 i
  for i in $(seq $(($2 * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
  for i in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Wait until the server holds $1 complete with $2 bytes (s3s-fs writes the object on Complete).
wait_object() {
  for _ in $(seq 1200); do
    [ "$(stat -c %s "$DATA/$BUCKET/$1" 2>/dev/null || echo -1)" = "$2" ] && return 0
    sleep 0.05
  done
  log "object $1 never reached $2 bytes"; return 1
}
wait_tree() {
  for _ in $(seq 2400); do
    [ "$(find "$DATA/$BUCKET/$1" -type f 2>/dev/null | wc -l)" -ge "$2" ] && return 0
    sleep 0.05
  done
  log "tree $1 never reached $2 files"; return 1
}
# `timed` runs a copy and its wait in one bounded child shell.
export -f log wait_object wait_tree
export DATA BUCKET WSRC

# ---------------------------------------------------------------------------- workloads
run_direct() {
  local r=$1 v q
  if want read; then
    drop_caches
    # The server's own CPU per GiB it serves: the cost every row shares on these 2 cores.
    local s0; s0=$($H cpu "$SERVER_PID")
    v=$(direct get --key big.bin | field mbps); record direct seq_cold "$r" "$v"
    record direct srv_cpu_gib "$r" "$(echo "($($H cpu "$SERVER_PID") - $s0) / ($BIG_MIB / 1024)" | bc -l)"
    # No "warm" direct row: direct access has no cache; every GET is served by the server.
    # About FIO_SECS of requests each at this server's speed (fio is time-based).
    local n4k=$((FIO_SECS * 500)) n256=$((FIO_SECS * 100)) n1m=$((FIO_SECS * 50))
    v=$(direct rand --key big.bin --bs 4096 --count $n4k)
    record direct rand4k_iops "$r" "$(field iops <<<"$v")"
    record direct rand4k_p50 "$r" "$(field p50_us <<<"$v")"; record direct rand4k_p99 "$r" "$(field p99_us <<<"$v")"
    v=$(direct rand --key big.bin --bs 262144 --count $n256)
    record direct rand256k_mbps "$r" "$(field mbps <<<"$v")"
    record direct rand256k_p50 "$r" "$(field p50_us <<<"$v")"; record direct rand256k_p99 "$r" "$(field p99_us <<<"$v")"
    v=$(direct rand --key big.bin --bs 1048576 --count $n1m)
    record direct rand1m_mbps "$r" "$(field mbps <<<"$v")"
    record direct rand1m_p50 "$r" "$(field p50_us <<<"$v")"; record direct rand1m_p99 "$r" "$(field p99_us <<<"$v")"
    v=$(direct interleave --key big.bin | field mbps); record direct interleave "$r" "$v"
  fi
  if want write; then
    v=$(direct put --key "w-direct-$r.bin" --file "$WSRC"); record direct seq_write "$r" "$(field mbps <<<"$v")"
    echo "direct seq_write run $r: server completion took $(field complete_secs <<<"$v") s" >>"$WORK/ops.log"
    rm -f "$DATA/$BUCKET/w-direct-$r.bin"
    q=$(req_snap)
    v=$(direct putdir --prefix "cp-direct-$r/" --dir "$TREE" | field secs); record direct cp_tree "$r" "$v"
    req_row direct rq_cp_file "$r" "$q" "$NFILES"
    rm -rf "$DATA/$BUCKET/cp-direct-$r"
    # The reference for write-back: cp -r of the tree to local disk (peer "local").
    record local cp_tree_ret "$r" "$(timed "$LIMIT" cp -r "$TREE" "$WORK/local-cp-$r")"
    rm -rf "$WORK/local-cp-$r"
  fi
  if want meta; then
    q=$(req_snap)
    v=$(direct putdir --prefix "cp-direct-$r/" --dir "$TREE" | field secs); record direct cp_tree "$r" "$v"
    req_row direct rq_cp_file "$r" "$q" "$NFILES"
    rm -rf "$DATA/$BUCKET/cp-direct-$r"
    v=$(direct list --prefix list/ | field secs); record direct ls_l "$r" "$v"
  fi
  if want read; then
    v=$(direct list --prefix list/ | field secs); record direct ls_l "$r" "$v"
    local url; url=$(direct presign --key movie.mp4)
    record direct ffprobe "$r" "$(timed "$LIMIT" ffprobe -v error -show_format -show_streams "$url")"
    record direct seek_frame "$r" "$(media_seeks "$url")"
    v=$(direct ttfb --key movie.mp4 | field median_ms); record direct ttfb_seek "$r" "$v"
    # A direct client that knows the key needs no open: the same ranged GET, of another object.
    v=$(direct ttfb --key fresh-0.bin | field median_ms); record direct ttfb_open "$r" "$v"
  fi
}

# Median seconds to decode one frame after each of 5 seeks (fixed positions).
media_seeks() {
  local src=$1 t=() p v
  for frac in 0.13 0.71 0.37 0.89 0.52; do
    p=$(echo "$MP4_DUR * $frac" | bc -l)
    v=$(timed "$LIMIT" ffmpeg -v error -ss "$p" -i "$src" -frames:v 1 -f null -)
    num "$v" || { echo "$v"; return; }
    t+=("$v")
  done
  median "${t[@]}"
}

fio_row() {
  local peer=$1 r=$2 bs=$3 name=$4 v
  FIO_BYTES=0
  rm -f "$WORK/fio.json"
  timeout -k 5 $((FIO_SECS + LIMIT)) fio --name=rr --filename="$FS_DIR/big.bin" --rw=randread --bs="$bs" \
    --ioengine=psync --iodepth=1 --invalidate=1 --randrepeat=1 --time_based --runtime="$FIO_SECS" \
    --size=$((BIG_MIB * MIB)) --output-format=json --output="$WORK/fio.json" >/dev/null 2>>"$WORK/ops.log" || true
  if ! v=$($H fio "$WORK/fio.json" 2>>"$WORK/ops.log"); then
    record "$peer" "${name}_p50" "$r" fail
    return
  fi
  if [ "$name" = rand4k ]; then record "$peer" rand4k_iops "$r" "$(field iops <<<"$v")"
  else record "$peer" "${name}_mbps" "$r" "$(field mbps <<<"$v")"; fi
  record "$peer" "${name}_p50" "$r" "$(field p50_us <<<"$v")"
  record "$peer" "${name}_p99" "$r" "$(field p99_us <<<"$v")"
  FIO_BYTES=$(field io_bytes <<<"$v")
}

# Adds the filesystem's CPU since $2 and $3 bytes moved to the read or write tally ($1), and
# logs the row's own figure (per-row CPU is how a regression is traced to a workload).
tally() {
  local kind=$1 c=$2 n=$3 row=$4 d
  d=$(echo "$(cpu_now) - $c" | bc -l)
  if [ "$kind" = read ]; then RCPU=$(echo "$RCPU + $d" | bc -l); RBYTES=$((RBYTES + n))
  else WCPU=$(echo "$WCPU + $d" | bc -l); WBYTES=$((WBYTES + n)); fi
  [ "$n" -gt 0 ] && printf 'cpu %s %s: %.2f s for %d bytes = %.2f s/GiB\n' "$PEER" "$row" "$d" "$n" \
    "$(echo "$d / ($n / 1073741824)" | bc -l)" >>"$WORK/ops.log"
  return 0
}

run_fs() {
  local peer=$1 r=$2 v c0 t q size=$((BIG_MIB * MIB))
  PEER=$peer RCPU=0 RBYTES=0 WCPU=0 WBYTES=0
  PEAK=0
  if want read; then
    # Once per peer: a FUSE file's page cache goes with its unmount, so each fresh mount below
    # starts cold without dropping (and re-warming the server's copy) every time.
    drop_caches
    # 1. sequential read: cold (fresh mount, caches dropped), then warm.
    mount_fs "$peer"; c0=$(cpu_now)
    t=$(timed 600 dd if="$FS_DIR/big.bin" of=/dev/null bs=1M status=none)
    record "$peer" seq_cold "$r" "$(mbps $size "$t")"
    tally read "$c0" "$size" seq_cold
    t=$(timed 600 dd if="$FS_DIR/big.bin" of=/dev/null bs=1M status=none)
    record "$peer" seq_warm "$r" "$(mbps $size "$t")"
    umount_fs "$peer" "$r"
    if [ "$peer" = byosfs ]; then
      # Disk cache (issue 26): a cold read filling an empty cache, then a cold read (page cache
      # dropped, so the cache's files come from the disk) after a remount; and the bytes the
      # cache directory holds against its cap.
      log "  $peer: disk cache"
      rm -rf "$WORK/dcache"
      drop_caches
      mount_fs byosfs-disk
      t=$(timed 600 dd if="$FS_DIR/big.bin" of=/dev/null bs=1M status=none)
      record "$peer" dc_first "$r" "$(mbps $size "$t")"
      umount_fs "$peer" "$r"
      drop_caches
      mount_fs byosfs-disk
      t=$(timed 600 dd if="$FS_DIR/big.bin" of=/dev/null bs=1M status=none)
      record "$peer" dc_remount "$r" "$(mbps $size "$t")"
      umount_fs "$peer" "$r"
      local held; held=$(du -s -B1 "$WORK/dcache" | cut -f1)
      held=$(( held > $(du -s -b "$WORK/dcache" | cut -f1) ? held : $(du -s -b "$WORK/dcache" | cut -f1) ))
      record "$peer" dc_dir_mib "$r" "$(echo "$held / $MIB" | bc -l)"
      record "$peer" dc_cap_mib "$r" $((2 * BIG_MIB))
    fi
    log "  $peer: random reads"
    # 2. random reads, each size on a fresh mount so no cache carries over.
    for spec in 4k:rand4k 256k:rand256k 1m:rand1m; do
      mount_fs "$peer"; c0=$(cpu_now)
      fio_row "$peer" "$r" "${spec%%:*}" "${spec#*:}"
      tally read "$c0" "${FIO_BYTES:-0}" "${spec#*:}"
      umount_fs "$peer" "$r"
    done
    log "  $peer: interleaved readers, ttfb, media, ls -l"
    # Two interleaved sequential readers on one open file; then, on the same mount but other
    # objects nothing has read yet: 7 + 5. time to first byte after a seek, the media scenario,
    # and 4. `ls -l` of the listing directory.
    mount_fs "$peer"; c0=$(cpu_now)
    v=$(timeout -k 5 600 $H interleave "$FS_DIR/big.bin" 1048576 "$IL_SECS" 2>>"$WORK/ops.log")
    local il_mbps il_bytes
    il_mbps=$(field mbps <<<"$v"); il_bytes=$(field bytes <<<"$v")
    record "$peer" interleave "$r" "${il_mbps:-fail}"
    tally read "$c0" "${il_bytes:-0}" interleave
    # The open happens in the helper before its clock starts: reads at new offsets only.
    v=$(timeout -k 5 "$LIMIT" $H ttfb "$FS_DIR/movie.mp4" 5 65536 "$SERVER_ENDPOINT" 2>>"$WORK/ops.log")
    echo "requests $peer ttfb_seek run $r: $v" >>"$WORK/ops.log"
    record "$peer" ttfb_seek "$r" "$(field median_ms <<<"$v")"
    record "$peer" rq_seek_read "$r" "$(field reqs_per_read <<<"$v")"
    # Open (and look up) a file nothing has touched, read 64 KiB at an offset: first byte.
    q=$(req_snap)
    v=$(timeout -k 5 "$LIMIT" $H ttfbopen "$FS_DIR" "$NFRESH" 65536 2>>"$WORK/ops.log" | field median_ms)
    record "$peer" ttfb_open "$r" "${v:-fail}"
    req_row "$peer" rq_open_read "$r" "$q" "$NFRESH"
    record "$peer" ffprobe "$r" "$(timed "$LIMIT" ffprobe -v error -show_format -show_streams "$FS_DIR/movie.mp4")"
    record "$peer" seek_frame "$r" "$(media_seeks "$FS_DIR/movie.mp4")"
    q=$(req_snap)
    record "$peer" ls_l "$r" "$(timed "$LIMIT" ls -l "$FS_DIR/list")"
    req_row "$peer" rq_ls_l "$r" "$q" 1
    umount_fs "$peer" "$r"
  fi
  if want meta; then
    log "  $peer: cp -r, ls -l"
    mount_fs "$peer"
    q=$(req_snap)
    t=$(timed "$LIMIT" bash -c 'cp -r "$1" "$2" && "$3" "$4" "$5"' _ \
      "$TREE" "$FS_DIR/cp-$peer-$r" wait_tree "cp-$peer-$r" "$NFILES")
    record "$peer" cp_tree "$r" "$t"
    req_row "$peer" rq_cp_file "$r" "$q" "$NFILES"
    umount_fs "$peer" "$r"
    rm -rf "$DATA/$BUCKET/cp-$peer-$r"
    # A fresh mount: nothing of the listed directory is known yet.
    mount_fs "$peer"
    q=$(req_snap)
    record "$peer" ls_l "$r" "$(timed "$LIMIT" ls -l "$FS_DIR/list")"
    req_row "$peer" rq_ls_l "$r" "$q" 1
    umount_fs "$peer" "$r"
  fi
  if want write; then
    log "  $peer: write, cp -r"
    # 3. sequential write, counted until the object is complete on the server.
    mount_fs "$peer"; c0=$(cpu_now)
    local wsize=$((WRITE_MIB * MIB))
    t=$(timed 900 bash -c 'dd if="$WSRC" of="$1" bs=1M count="$2" status=none && "$3" "$4" "$5"' _ \
      "$FS_DIR/w-$peer-$r.bin" "$WRITE_MIB" wait_object "w-$peer-$r.bin" "$wsize")
    record "$peer" seq_write "$r" "$(mbps $wsize "$t")"
    if num "$t"; then tally write "$c0" "$wsize" seq_write; fi
    rm -f "$FS_DIR/w-$peer-$r.bin" 2>/dev/null || true
    # 4. cp -r of the small-file tree: until cp returns (cp_tree_ret), and until every file is
    # on the server (cp_tree; the same for a peer that uploads at close).
    q=$(req_snap)
    t=$(timed "$LIMIT" cp -r "$TREE" "$FS_DIR/cp-$peer-$r")
    record "$peer" cp_tree_ret "$r" "$t"
    if num "$t"; then
      v=$(timed "$LIMIT" bash -c '"$1" "$2" "$3"' _ wait_tree "cp-$peer-$r" "$NFILES")
      if num "$v"; then t=$(echo "$t + $v" | bc -l); else t=$v; fi
    fi
    record "$peer" cp_tree "$r" "$t"
    req_row "$peer" rq_cp_file "$r" "$q" "$NFILES"
    umount_fs "$peer" "$r"
    rm -rf "$DATA/$BUCKET/cp-$peer-$r" "$DATA/$BUCKET/w-$peer-$r.bin"
  fi
  record "$peer" peak_rss "$r" "$PEAK"
  [ "$RBYTES" -gt 0 ] && record "$peer" cpu_read_gib "$r" "$(echo "$RCPU / ($RBYTES / 1073741824)" | bc -l)"
  [ "$WBYTES" -gt 0 ] && record "$peer" cpu_write_gib "$r" "$(echo "$WCPU / ($WBYTES / 1073741824)" | bc -l)"
  if [ $((RBYTES + WBYTES)) -gt 0 ]; then
    record "$peer" cpu_per_gib "$r" "$(echo "($RCPU + $WCPU) / (($RBYTES + $WBYTES) / 1073741824)" | bc -l)"
  fi
}

START=$(date +%s)
for r in $(seq "$RUNS"); do
  for peer in $PEERS; do
    log "run $r/$RUNS: $peer"
    if [ "$peer" = direct ]; then run_direct "$r"; else run_fs "$peer" "$r"; fi
  done
done
log "done in $(($(date +%s) - START)) s (setup excluded)"

{
  echo "byosfs bench: $( [ "$QUICK" = 1 ] && echo quick || echo full ) mode, object ${BIG_MIB} MiB, write ${WRITE_MIB} MiB, $NFILES files, $NLIST listed, mp4 $(du -m "$MP4" 2>/dev/null | cut -f1) MB"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), loopback s3s-fs server, payload signing (byosfs, direct): $PAYLOAD_SIGNING"
  if [ -n "$RTT" ]; then echo "link: RTT $RTT ms, rate $([ "$RATE" = 0 ] && echo unlimited || echo "$RATE Mbit/s") each way (examples/wanproxy.rs); requests counted at the server"; fi
  echo
  BENCH_RTT_MS=$RTT $H report "$RES"
} | tee "${OUT:-/dev/null}"
