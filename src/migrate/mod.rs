//! `byosfs migrate`: copy a tenant's objects to another backend or prefix, verified,
//! resumable and incremental.
//!
//! A run lists the source and the target, reads the journal of earlier runs, and lets
//! [`plan::plan`] decide what to copy (new and changed objects), what to skip (identical in
//! the target) and what is extraneous (in the target only). [`copy::Copier`] copies each
//! object and verifies it ([`verify`]); verified copies go to the [`journal`], so a run
//! killed at any point is finished by the next one without copying a verified object again.
//! The source is only ever read, except by `delete_source` at the end of a run in which
//! nothing failed. The command's wiring (config, control socket, `--switch`) is in
//! [`command`].

pub mod command;
pub mod copy;
pub mod journal;
pub mod plan;
pub mod report;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::backend::paging::ListGuard;
use crate::backend::{Backend, BackendError, ListParams, ObjectMeta};

use copy::{Copier, ServerSide};
use journal::{JournalError, JournalWriter};
use plan::{Verified, Version};
use report::{Failure, Progress, Report};

/// Most objects one side of a migration may list (about 200 bytes each in memory).
const MAX_OBJECTS: usize = 20_000_000;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct MigrateParams {
    /// Objects copied at once.
    pub concurrency: usize,
    /// Part size of streamed multipart copies.
    pub part_size: u64,
    /// Parts of one object in flight at once.
    pub part_concurrency: usize,
    /// Bytes of object data held in memory at once, across all copies.
    pub budget: u64,
    /// List what would be copied, write nothing.
    pub dry_run: bool,
    /// Delete target objects that are not in the source.
    pub delete_extraneous: bool,
    /// After a run in which nothing failed, delete the verified source objects.
    pub delete_source: bool,
    /// The journal file.
    pub journal: PathBuf,
    /// Show a progress bar (when stderr is a terminal).
    pub progress_bar: bool,
    /// Without a bar, print a progress line this often.
    pub progress_every: Option<Duration>,
}

/// What is copied where.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The tenant's current storage, confined to its prefix.
    pub source: Arc<dyn Backend>,
    /// The target, confined to the target prefix.
    pub target: Arc<dyn Backend>,
    /// Set when both are in the same bucket: the service copies.
    pub server_side: Option<ServerSide>,
}

/// Why a run could not be carried out at all (single objects failing are in the report).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Listing one side failed.
    #[error("listing the {side}: {source}")]
    List {
        /// "source" or "target".
        side: &'static str,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Every object under `backend`'s prefix, directory markers included.
pub async fn list_all(backend: &dyn Backend, side: &'static str) -> Result<Vec<ObjectMeta>, MigrateError> {
    let err = |source| MigrateError::List { side, source };
    let mut guard = ListGuard::new(side, MAX_OBJECTS);
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = backend
            .list(&ListParams::new("", false).with_continuation(token.take()))
            .await
            .map_err(err)?;
        guard.check(&page).map_err(err)?;
        out.extend(page.objects);
        match page.next {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// The journal header for a migration between these two locations.
pub fn journal_header(ep: &Endpoints) -> String {
    format!("{} -> {}", ep.source.describe(), ep.target.describe())
}

/// Run one migration pass; see the module docs.
pub async fn migrate(ep: &Endpoints, params: &MigrateParams) -> Result<Report, MigrateError> {
    let started = Instant::now();
    let header = journal_header(ep);
    let mut report = Report {
        source: ep.source.describe(),
        target: ep.target.describe(),
        dry_run: params.dry_run,
        journal: params.journal.display().to_string(),
        ..Report::default()
    };
    let (source, target) = futures::join!(
        list_all(ep.source.as_ref(), "source"),
        list_all(ep.target.as_ref(), "target")
    );
    let source = source?;
    let target: BTreeMap<String, ObjectMeta> = target?.into_iter().map(|m| (m.key.clone(), m)).collect();
    let loaded = journal::load(&params.journal, &header)?;
    let plan = plan::plan(&source, &target, &loaded.verified);
    report.source_objects = source.len() as u64;
    report.skipped = plan.skip.len() as u64;
    report.skipped_bytes = plan.skip.iter().map(|(_, s)| s).sum();
    report.extraneous = plan.extraneous.iter().map(|(k, _)| k.clone()).collect();
    if params.dry_run {
        report.copied = plan.copy.len() as u64;
        report.copied_bytes = plan.copy_bytes();
        report.would_copy = plan.copy.iter().map(|(m, _)| m.key.clone()).collect();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let journal = JournalWriter::open(&params.journal, &header)?;
    let progress = Progress::new(plan.copy.len() as u64, plan.copy_bytes(), params.progress_bar);
    let lines = params.progress_every.and_then(|every| progress.plain_lines(every));
    let copier = Arc::new(Copier::new(
        ep.source.clone(),
        ep.target.clone(),
        ep.server_side.clone(),
        params.part_size,
        params.part_concurrency,
        params.budget,
    ));
    // Each copy is its own task, so hashing spreads over the runtime's threads.
    let mut results = futures::stream::iter(plan.copy.iter().cloned())
        .map(|(meta, _)| {
            let copier = copier.clone();
            tokio::spawn(async move {
                let r = copier.copy_verified(&meta.key).await;
                (meta, r)
            })
        })
        .buffer_unordered(params.concurrency.max(1));
    while let Some(joined) = results.next().await {
        let (meta, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                report.failed.push(Failure {
                    key: "(task)".to_owned(),
                    reason: format!("copy task failed: {e}"),
                });
                continue;
            }
        };
        match result {
            Ok(dst) => {
                journal.record(
                    &meta.key,
                    Verified {
                        source: Version::of(&meta),
                        target: dst,
                    },
                );
                report.copied += 1;
                report.copied_bytes += meta.size;
                progress.object_done(meta.size, true);
            }
            Err(e) => {
                report.failed.push(Failure {
                    key: meta.key.clone(),
                    reason: e.to_string(),
                });
                progress.object_done(meta.size, false);
            }
        }
    }
    drop(lines);
    progress.finish();
    report.failed.sort_by(|a, b| a.key.cmp(&b.key));

    if params.delete_extraneous {
        for (key, _) in &plan.extraneous {
            match ep.target.delete(key).await {
                Ok(()) => report.extraneous_deleted += 1,
                Err(e) => report.failed.push(Failure {
                    key: key.clone(),
                    reason: format!("deleting extraneous target object: {e}"),
                }),
            }
        }
    }
    if report.failed.is_empty() {
        journal.done();
        if params.delete_source {
            delete_source(ep, &source, &mut report).await;
        }
    }
    journal.finish()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Delete every listed source object that is still the version listed (all were verified
/// in this run, copied or identical); one changed since is kept and reported.
async fn delete_source(ep: &Endpoints, source: &[ObjectMeta], report: &mut Report) {
    for m in source {
        let still = match ep.source.head(&m.key).await {
            Ok(now) => now.size == m.size && now.etag == m.etag,
            Err(_) => false,
        };
        if !still {
            report.failed.push(Failure {
                key: m.key.clone(),
                reason: "changed in the source since it was copied; not deleted".to_owned(),
            });
            continue;
        }
        match ep.source.delete(&m.key).await {
            Ok(()) => report.source_deleted += 1,
            Err(e) => report.failed.push(Failure {
                key: m.key.clone(),
                reason: format!("deleting from the source: {e}"),
            }),
        }
    }
}
