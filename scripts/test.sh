#!/usr/bin/env bash
# The full test suite: formatting, lints, unit + integration tests, and real FUSE mounts
# over a real S3 server on loopback. Release build, so the mount tests move real volumes fast.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --release -- --test-threads=2
scripts/check-release-binary.sh
