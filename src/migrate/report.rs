//! The outcome of a run: counted while it runs, printed (text or JSON) at the end, and shown
//! as progress meanwhile (a bar on a terminal, a plain line every few seconds otherwise).

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;

/// One object that could not be copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Its key, relative to the tenant's prefix.
    pub key: String,
    /// Why (after the second attempt).
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Source and target, as `describe()` shows them.
    pub source: String,
    /// The target.
    pub target: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Objects in the source.
    pub source_objects: u64,
    /// Objects copied and verified (dry run: that would be copied).
    pub copied: u64,
    /// Bytes of those objects.
    pub copied_bytes: u64,
    /// Objects already identical in the target.
    pub skipped: u64,
    /// Bytes of those objects.
    pub skipped_bytes: u64,
    /// Objects that failed, each with its reason.
    pub failed: Vec<Failure>,
    /// Target objects that are not in the source.
    pub extraneous: Vec<String>,
    /// How many of those were deleted (`--delete-extraneous`).
    pub extraneous_deleted: u64,
    /// Source objects deleted (`--delete-source`).
    pub source_deleted: u64,
    /// Keys a dry run would copy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_copy: Vec<String>,
    /// Wall-clock time in seconds.
    pub seconds: f64,
    /// The journal used.
    pub journal: String,
}

impl Report {
    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

fn human(bytes: u64) -> String {
    // Display only.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{bytes} B")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "migrate {} -> {}", self.source, self.target)?;
        if self.dry_run {
            for k in &self.would_copy {
                writeln!(f, "would copy {k}")?;
            }
            writeln!(
                f,
                "dry run: {} object(s), {} to copy; {} identical; {} extraneous in the target",
                self.copied,
                human(self.copied_bytes),
                self.skipped,
                self.extraneous.len()
            )?;
        } else {
            writeln!(
                f,
                "copied {} object(s) ({}), skipped {} identical ({}), failed {}, in {:.1} s",
                self.copied,
                human(self.copied_bytes),
                self.skipped,
                human(self.skipped_bytes),
                self.failed.len(),
                self.seconds
            )?;
        }
        for x in &self.failed {
            writeln!(f, "FAILED {}: {}", x.key, x.reason)?;
        }
        if !self.extraneous.is_empty() {
            writeln!(
                f,
                "{} object(s) in the target are not in the source{}:",
                self.extraneous.len(),
                if self.extraneous_deleted > 0 { " (deleted)" } else { "" }
            )?;
            for k in self.extraneous.iter().take(20) {
                writeln!(f, "  {k}")?;
            }
            if self.extraneous.len() > 20 {
                writeln!(f, "  ... and {} more", self.extraneous.len() - 20)?;
            }
        }
        if self.source_deleted > 0 {
            writeln!(f, "deleted {} verified object(s) from the source", self.source_deleted)?;
        }
        Ok(())
    }
}

/// Live counters of a run, shown as progress.
#[derive(Debug)]
pub struct Progress {
    objects_total: u64,
    bytes_total: u64,
    objects: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    /// Progress over `objects_total` objects of `bytes_total` bytes; a bar when `bar` (and
    /// stderr is a terminal), else nothing until [`Progress::plain_lines`] is started.
    pub fn new(objects_total: u64, bytes_total: u64, bar: bool) -> Arc<Self> {
        let bar = (bar && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(bytes_total);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        Arc::new(Self {
            objects_total,
            bytes_total,
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bar,
            started: Instant::now(),
        })
    }

    /// One object done (`ok` or failed), of `bytes` bytes.
    pub fn object_done(&self, bytes: u64, ok: bool) {
        let n = self.objects.fetch_add(1, Ordering::Relaxed) + 1;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let failed = if ok {
            self.failed.load(Ordering::Relaxed)
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        if let Some(b) = &self.bar {
            b.inc(bytes);
            b.set_message(format!("objects {n}/{}, failed {failed}", self.objects_total));
        }
    }

    /// The plain progress line.
    pub fn line(&self) -> String {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_precision_loss)]
        let rate = bytes as f64 / secs;
        #[allow(clippy::cast_precision_loss)]
        let eta = if rate > 0.0 {
            format!("{:.0} s", (self.bytes_total.saturating_sub(bytes)) as f64 / rate)
        } else {
            "?".to_owned()
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rate = rate as u64;
        format!(
            "migrate: {}/{} objects, {}/{}, {}/s, ETA {eta}, {} failed",
            self.objects.load(Ordering::Relaxed),
            self.objects_total,
            human(bytes),
            human(self.bytes_total),
            human(rate),
            self.failed.load(Ordering::Relaxed)
        )
    }

    /// Without a bar: print [`Progress::line`] to stderr every `every` until the returned
    /// guard is dropped.
    pub fn plain_lines(self: &Arc<Self>, every: Duration) -> Option<PlainLines> {
        if self.bar.is_some() {
            return None;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("migrate-progress".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    eprintln!("{}", me.line());
                }
            })
            .ok()?;
        Some(PlainLines {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Clear the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Stops the plain progress lines when dropped.
#[derive(Debug)]
pub struct PlainLines {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PlainLines {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_failures_and_extraneous() {
        let r = Report {
            source: "a".into(),
            target: "b".into(),
            copied: 2,
            copied_bytes: 3 << 20,
            failed: vec![Failure {
                key: "x".into(),
                reason: "verification failed: content differs".into(),
            }],
            extraneous: vec!["old".into()],
            ..Report::default()
        };
        let text = r.to_string();
        assert!(text.contains("copied 2 object(s) (3.0 MiB)"), "{text}");
        assert!(text.contains("FAILED x: verification failed"), "{text}");
        assert!(text.contains("  old"), "{text}");
        assert!(!r.ok());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["failed"][0]["key"], "x");
    }

    #[test]
    fn progress_line_counts() {
        let p = Progress::new(3, 30, false);
        p.object_done(10, true);
        p.object_done(10, false);
        let l = p.line();
        assert!(l.contains("2/3 objects") && l.contains("1 failed"), "{l}");
    }
}
