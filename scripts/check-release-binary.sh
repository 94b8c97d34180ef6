#!/usr/bin/env bash
# The release binary carries no test code: the in-memory and fault-injecting backends exist
# only with the `test-support` feature, which `cargo build` leaves off (this crate's tests turn
# it on through a dev-dependency on itself). Builds the binary as users get it and looks for
# their symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin byosfs
bin=target/release/byosfs
# Read the symbols once: `nm | grep -q` under pipefail fails whenever grep's early exit
# makes nm die of SIGPIPE.
syms=$(nm -C "$bin")
if ! grep -q 'backend::local::LocalBackend' <<<"$syms"; then
    echo "check-release-binary: no symbols in $bin to check (stripped?)" >&2
    exit 1
fi
hits=$(grep -E 'backend::(memory|fault)::' <<<"$syms" || true)
if [ -n "$hits" ]; then
    head -5 <<<"$hits"
    echo "check-release-binary: test backends are in $bin" >&2
    exit 1
fi
echo "check-release-binary: no memory or fault backend in $bin"
