//! The journal of verified copies: what lets a rerun resume and skip.
//!
//! One JSON object per line, appended: a header naming the source and target, then one
//! record per verified object (its source and target versions, see [`super::plan`]), and a
//! `done` line when a run finished with nothing failed. A record is written only after its
//! object was verified, and the file is fsync'd after each batch, so a run killed at any
//! point leaves a journal whose every record is true; objects copied but not yet recorded are
//! simply copied again. A torn last line (killed mid-write) is ignored. Reads are capped at
//! [`MAX_JOURNAL_BYTES`] so a corrupt or foreign file cannot exhaust memory.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::plan::{Verified, Version};

/// Largest journal read: about 4 million records of ~250 bytes.
pub const MAX_JOURNAL_BYTES: u64 = 1 << 30;

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written.
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Larger than [`MAX_JOURNAL_BYTES`].
    #[error("journal {0}: larger than 1 GiB; remove it (the next run then compares ETags only)")]
    TooLarge(PathBuf),
    /// Written for another source or target.
    #[error("journal {path} belongs to {found}, not {expected}; pass another --journal")]
    Foreign {
        /// The journal file.
        path: PathBuf,
        /// Header found.
        found: String,
        /// Header expected.
        expected: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Header { migrate: String },
    Record { key: String, src: Version, dst: Version },
    Done { done: u64 },
}

/// What a journal holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Verified copies by key (the latest record of each key).
    pub verified: HashMap<String, Verified>,
    /// Whether some run finished with nothing failed.
    pub completed: bool,
}

/// Parse a journal's text for `header`. Unparseable lines (a torn last line) are skipped.
pub fn parse(text: &str, header: &str) -> Result<Loaded, String> {
    let mut out = Loaded::default();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Header { migrate }) => {
                if migrate != header {
                    return Err(migrate);
                }
            }
            Ok(Line::Record { key, src, dst }) if i > 0 => {
                out.verified.insert(
                    key,
                    Verified {
                        source: src,
                        target: dst,
                    },
                );
            }
            Ok(Line::Done { .. }) => out.completed = true,
            Ok(Line::Record { .. }) | Err(_) => {}
        }
    }
    Ok(out)
}

/// Read the journal at `path` for `header` (absent: empty).
pub fn load(path: &Path, header: &str) -> Result<Loaded, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(io(e)),
    };
    let mut text = String::new();
    let n = file.take(MAX_JOURNAL_BYTES + 1).read_to_string(&mut text).map_err(io)?;
    if n as u64 > MAX_JOURNAL_BYTES {
        return Err(JournalError::TooLarge(path.to_owned()));
    }
    parse(&text, header).map_err(|found| JournalError::Foreign {
        path: path.to_owned(),
        found,
        expected: header.to_owned(),
    })
}

enum Msg {
    Record(String, Verified),
    Done(u64),
}

/// Appends records from any task; a thread writes them in batches, each fsync'd.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<JoinHandle<Result<(), std::io::Error>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

fn line(msg: &Msg) -> String {
    let l = match msg {
        Msg::Record(key, v) => Line::Record {
            key: key.clone(),
            src: v.source.clone(),
            dst: v.target.clone(),
        },
        Msg::Done(t) => Line::Done { done: *t },
    };
    let mut s = serde_json::to_string(&l).unwrap_or_default();
    s.push('\n');
    s
}

impl JournalWriter {
    /// Open (create) the journal at `path` for appending; a new file gets `header` first.
    pub fn open(path: &Path, header: &str) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            let h = serde_json::to_string(&Line::Header {
                migrate: header.to_owned(),
            })
            .unwrap_or_default();
            file.write_all(format!("{h}\n").as_bytes()).map_err(io)?;
            file.sync_data().map_err(io)?;
        } else {
            // A torn last line from a killed run: end it, so the next record starts clean.
            let mut f = File::open(path).map_err(io)?;
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::End(-1)).map_err(io)?;
            let mut last = [0u8; 1];
            f.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("migrate-journal".into())
            .spawn(move || -> Result<(), std::io::Error> {
                while let Ok(first) = rx.recv() {
                    let mut batch = line(&first);
                    while let Ok(more) = rx.try_recv() {
                        batch.push_str(&line(&more));
                    }
                    file.write_all(batch.as_bytes())?;
                    file.sync_data()?;
                }
                Ok(())
            })
            .map_err(io)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            path: path.to_owned(),
        })
    }

    /// Record a verified copy (written and fsync'd shortly, in order).
    pub fn record(&self, key: &str, v: Verified) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Record(key.to_owned(), v));
        }
    }

    /// Record that the run finished with nothing failed.
    pub fn done(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Done(crate::metrics::unix_ms()));
        }
    }

    /// Write what is pending and close; the first write error, if any.
    pub fn finish(mut self) -> Result<(), JournalError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(source))) => Err(JournalError::Io {
                path: self.path.clone(),
                source,
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(size: u64, etag: &str) -> Version {
        Version {
            size,
            etag: Some(etag.to_owned()),
            modified_ms: Some(7),
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/j.journal");
        let w = JournalWriter::open(&path, "a -> b").unwrap();
        w.record(
            "x y",
            Verified {
                source: v(1, "\"s\""),
                target: v(1, "\"t\""),
            },
        );
        w.finish().unwrap();
        // A killed writer's half line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"key\":\"half").unwrap();
        drop(f);
        let loaded = load(&path, "a -> b").unwrap();
        assert_eq!(loaded.verified.len(), 1);
        assert_eq!(loaded.verified["x y"].target, v(1, "\"t\""));
        assert!(!loaded.completed);
        // Reopened: the torn line is ended, later records and the done mark parse.
        let w = JournalWriter::open(&path, "a -> b").unwrap();
        w.record(
            "x y",
            Verified {
                source: v(2, "\"s2\""),
                target: v(2, "\"t2\""),
            },
        );
        w.done();
        w.finish().unwrap();
        let loaded = load(&path, "a -> b").unwrap();
        assert_eq!(loaded.verified["x y"].source, v(2, "\"s2\""), "the latest record wins");
        assert!(loaded.completed);
    }

    #[test]
    fn foreign_and_missing_journals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        assert_eq!(load(&path, "h").unwrap(), Loaded::default());
        JournalWriter::open(&path, "a -> b").unwrap().finish().unwrap();
        assert!(matches!(load(&path, "a -> c"), Err(JournalError::Foreign { .. })));
    }

    #[test]
    fn a_record_before_any_header_is_ignored() {
        let text = "{\"key\":\"k\",\"src\":{\"size\":1},\"dst\":{\"size\":1}}\n";
        assert!(parse(text, "h").unwrap().verified.is_empty());
    }
}
