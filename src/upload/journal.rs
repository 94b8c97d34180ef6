//! Journal of the multipart uploads a mount has open, kept in its staging directory so the
//! next mount can find and abort the uploads a crashed process left behind.
//!
//! One file per multipart upload, `<staging root>/s<session>-<generation>.journal`, written
//! after the upload is created and before its first part is sent, deleted once the upload is
//! completed or aborted. Format (line based, so appending a part is one `write` on an
//! `O_APPEND` file and a torn last line after a crash is simply ignored):
//!
//! ```text
//! byosfs-upload-journal 1 owner=<tenant> backend=<describe> key=<key> upload=<id> part_size=<n>
//! part <number> <len> <etag>
//! ```
//!
//! Strings are percent-encoded (`%`, whitespace, control bytes and non-ASCII), so keys of any
//! content stay on one line. A later `part` line for the same number replaces an earlier one.
//!
//! Durability: the header is fsynced (with its directory) before any part is sent: losing it
//! would orphan the upload. Part lines are not fsynced: they are informational (recovery
//! aborts, see `crate::recovery`) and survive a process crash in the page cache anyway.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::backend::{ETag, UploadId};

/// File name suffix of journal files.
pub const JOURNAL_SUFFIX: &str = ".journal";
/// Largest journal read back: a header and 10,000 part lines take well under 1 MiB; a file
/// larger than this was not written by byosfs.
pub const MAX_JOURNAL_BYTES: u64 = 4 << 20;
const MAGIC: &str = "byosfs-upload-journal";
const VERSION: &str = "1";

/// What a journal records about one multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Who the upload belongs to: the tenant name (empty if the session had none).
    pub owner: String,
    /// The backend's [`describe`](crate::backend::Backend::describe) when the upload started.
    pub backend: String,
    /// Object key within the owner's backend.
    pub key: String,
    /// The multipart upload id.
    pub upload_id: UploadId,
    /// Base part size of the [`PartLayout`](super::PartLayout) in use.
    pub part_size: u64,
    /// Parts the service acknowledged: S3 part number → (length, ETag).
    pub parts: BTreeMap<u32, (u64, ETag)>,
}

/// The open journal file of one upload (append side).
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
}

pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'%' || b <= b' ' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

pub(crate) fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Create the journal at `path` holding `record`'s header, durably (blocking IO).
    pub(crate) fn create(path: PathBuf, record: &JournalRecord) -> io::Result<Self> {
        let header = format!(
            "{MAGIC} {VERSION} owner={} backend={} key={} upload={} part_size={}\n",
            encode(&record.owner),
            encode(&record.backend),
            encode(&record.key),
            encode(&record.upload_id.0),
            record.part_size
        );
        // Paths are unique per upload (session number and generation in a per-process root).
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let written = file
            .write_all(header.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| path.parent().map_or(Ok(()), sync_dir));
        if let Err(e) = written {
            // No half-written journal for recovery to trip over.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self { path, file })
    }

    /// Record that part `number` (1-based) of `len` bytes was stored with `etag`.
    pub(crate) fn record_part(&self, number: u32, len: u64, etag: &ETag) -> io::Result<()> {
        let line = format!("part {number} {len} {}\n", encode(etag.as_str()));
        // One write on an O_APPEND file: concurrent part tasks never interleave lines.
        (&self.file).write_all(line.as_bytes())
    }

    /// Delete the journal: the upload is completed or aborted.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Parse a journal's text. `None` if the header is missing or damaged; damaged `part`
/// lines (a torn write at a crash) are skipped.
pub fn parse(text: &str) -> Option<JournalRecord> {
    let mut lines = text.lines();
    let mut fields = lines.next()?.split(' ');
    if fields.next()? != MAGIC || fields.next()? != VERSION {
        return None;
    }
    let mut get = |name: &str| -> Option<String> {
        let f = fields.next()?;
        decode(f.strip_prefix(name)?.strip_prefix('=')?)
    };
    let owner = get("owner")?;
    let backend = get("backend")?;
    let key = get("key")?;
    let upload_id = UploadId(get("upload")?);
    let part_size = get("part_size")?.parse().ok()?;
    let mut parts = BTreeMap::new();
    for line in lines {
        let mut f = line.split(' ');
        let parsed = (|| {
            if f.next()? != "part" {
                return None;
            }
            let number: u32 = f.next()?.parse().ok()?;
            let len: u64 = f.next()?.parse().ok()?;
            let etag = decode(f.next()?)?;
            Some((number, len, etag))
        })();
        if let Some((number, len, etag)) = parsed {
            parts.insert(number, (len, ETag::new(etag)));
        }
    }
    Some(JournalRecord {
        owner,
        backend,
        key,
        upload_id,
        part_size,
        parts,
    })
}

/// Read and parse the journal at `path` (blocking IO): not through a symlink, never
/// waiting on a FIFO, only a regular file of at most [`MAX_JOURNAL_BYTES`].
pub fn read(path: &Path) -> io::Result<JournalRecord> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_JOURNAL_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a journal"));
    }
    read_from(file)
}

/// Parse the journal open as `file`, reading at most [`MAX_JOURNAL_BYTES`].
pub fn read_from(file: File) -> io::Result<JournalRecord> {
    let mut text = String::new();
    file.take(MAX_JOURNAL_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_JOURNAL_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "journal larger than the cap",
        ));
    }
    parse(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged journal header"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JournalRecord {
        JournalRecord {
            owner: "acme".into(),
            backend: "s3://media/acme/".into(),
            key: "dir with space/100% caf\u{e9}\n.mp4".into(),
            upload_id: UploadId("abc=/+%".into()),
            part_size: 8 << 20,
            parts: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_header_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s0-0.journal");
        let j = Journal::create(path.clone(), &record()).unwrap();
        j.record_part(1, 10, &ETag::new("\"e1\"")).unwrap();
        j.record_part(2, 20, &ETag::new("\"e2\"")).unwrap();
        j.record_part(1, 11, &ETag::new("\"e1b\"")).unwrap();
        let got = read(&path).unwrap();
        let mut want = record();
        want.parts.insert(1, (11, ETag::new("\"e1b\"")));
        want.parts.insert(2, (20, ETag::new("\"e2\"")));
        assert_eq!(got, want);
        j.remove().unwrap();
        assert!(!path.exists());
        j.remove().unwrap();
    }

    #[test]
    fn torn_part_line_is_ignored_damaged_header_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s1-0.journal");
        let j = Journal::create(path.clone(), &record()).unwrap();
        j.record_part(1, 10, &ETag::new("e1")).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("part 2 5");
        let got = parse(&text).unwrap();
        assert_eq!(got.parts.len(), 1);
        assert!(parse("byosfs-upload-journal 1 owner=a").is_none());
        assert!(parse("something else").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn encoding_keeps_one_line() {
        let e = encode("a b\nc%\u{7f}é");
        assert!(!e.contains([' ', '\n']));
        assert_eq!(decode(&e).unwrap(), "a b\nc%\u{7f}é");
        assert!(decode("%zz").is_none());
        assert!(decode("%4").is_none());
    }
}
