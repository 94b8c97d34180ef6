//! byosfs: a FUSE filesystem that mounts one directory per tenant, each backed by that
//! tenant's own object storage (S3-compatible or a local directory) under a key prefix.
//!
//! Layers, top to bottom (a layer only calls those below it):
//! `fuse` (kernel glue) → `fs` (filesystem logic, the one errno mapping) → `namespace`
//! (inodes) / `read` (range reads, read-ahead) / `upload` (multipart pipeline) → `cache`
//! (block cache) / `backend` (object storage trait and implementations).

pub mod app;
pub mod backend;
pub mod cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub(crate) mod fair;
pub mod fs;
pub(crate) mod fuse;
pub mod key;
pub mod limits;
pub(crate) mod logline;
pub mod memory;
pub mod metrics;
pub mod migrate;
pub mod namespace;
pub mod read;
pub(crate) mod recovery;
pub(crate) mod reload;
pub(crate) mod sdnotify;
pub mod secret;
pub mod status;
pub mod tenant;
pub mod upload;
pub mod url;
