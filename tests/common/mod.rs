//! Helpers shared by integration tests: real S3 servers on loopback.
//!
//! Each test binary compiles this module separately and uses only part of it.
// Test-only code: panicking on a broken fixture is the right failure mode.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

pub mod dalserver;
pub mod drive;
pub mod fastfs;
pub mod fsapi;
pub mod hostile;
pub mod moto;
pub mod mount;
pub mod opcount;
pub mod proxy;
pub mod s3server;
