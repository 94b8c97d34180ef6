//! A simulated wide-area link for `scripts/bench.sh --rtt MS [--rate MBIT]`: a TCP proxy on
//! loopback that delays each direction by half the round trip, per chunk in flight, with an
//! optional rate shared by all connections (the test proxy's link mode,
//! `tests/common/proxy.rs`, run as a process so every peer of the bench goes through it).
//!
//! ```text
//! cargo run --release --example wanproxy -- --upstream http://127.0.0.1:PORT \
//!     --rtt-ms 20 [--rate-mbit 100] --endpoint-file FILE
//! ```
//!
//! Writes `http://127.0.0.1:PORT` of the proxy to `--endpoint-file` once accepting; runs until
//! killed.

#[path = "../tests/common/proxy.rs"]
#[allow(unreachable_pub, dead_code, clippy::unwrap_used, clippy::expect_used)]
mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command line of the link proxy.
#[derive(Debug, Parser)]
struct Args {
    /// The server behind the link (`http://127.0.0.1:PORT`).
    #[arg(long)]
    upstream: String,
    /// Round-trip time in milliseconds (each direction is delayed by half).
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Rate of each direction in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0)]
    rate_mbit: u64,
    /// Address to listen on; loopback only.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// File to write the proxy's endpoint URL to once it accepts.
    #[arg(long)]
    endpoint_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rate = (args.rate_mbit > 0).then(|| args.rate_mbit * 1_000_000 / 8);
    let link = proxy::Link::new(Duration::from_millis(args.rtt_ms), rate);
    let p = proxy::FaultProxy::start_link(&args.upstream, link, &args.addr);
    // Write then rename, so a reader never sees a partial URL.
    let tmp = args.endpoint_file.with_extension("tmp");
    std::fs::write(&tmp, &p.endpoint)?;
    std::fs::rename(&tmp, &args.endpoint_file)?;
    // The proxy serves on its own thread until the process is killed.
    loop {
        std::thread::park();
    }
}
