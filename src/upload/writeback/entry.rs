//! One closed file staged for write-back, on disk: `<staging root>/w<id>.wb`, a header line
//! naming the object, then the file's bytes.
//!
//! ```text
//! byosfs-writeback 1 owner=<tenant> backend=<describe> key=<key> size=<n> mtime=<s>.<ns> mode=<m|-> uid=<u|-> gid=<g|->
//! <n bytes>
//! ```
//!
//! Durability: written under a temporary name (`.w<id>.wb.tmp`), fsynced, renamed to its
//! final name, and the directory fsynced, so a file under its final name is whole: `close()`
//! returns only after that. A temporary file left by a crash is a close that never returned,
//! and is deleted with the rest of a crashed run's staging. Files are created `O_EXCL`,
//! `O_NOFOLLOW`, mode 0600, inside the uploader's private root (see `root.rs`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::PosixAttrs;
use crate::upload::journal::{decode, encode};

/// File name suffix of a staged write-back file.
pub const WB_SUFFIX: &str = ".wb";
const MAGIC: &str = "byosfs-writeback";
const VERSION: &str = "1";
/// Longest header read back (a key is at most 1 KiB, 3 KiB percent-encoded).
const MAX_HEADER: usize = 16 * 1024;

/// What a staged file is: where it goes and what to store with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Tenant name.
    pub owner: String,
    /// The tenant backend's `describe()` when the file was closed.
    pub backend: String,
    /// Object key within the tenant.
    pub key: String,
    /// Bytes of content after the header.
    pub size: u64,
    /// Modification time to store.
    pub mtime: SystemTime,
    /// Mode, owner, group to store.
    pub posix: PosixAttrs,
}

/// File name of entry `id` (final, temporary).
pub(crate) fn names(id: u64) -> (String, String) {
    (format!("w{id}{WB_SUFFIX}"), format!(".w{id}{WB_SUFFIX}.tmp"))
}

/// The id in a staged file's final name ([`names`]`(id).0`); `None` for any other name.
/// Ids grow with each close, so ordering by it replays closes in the order they happened.
pub(crate) fn id_of(name: &str) -> Option<u64> {
    name.strip_prefix('w')?.strip_suffix(WB_SUFFIX)?.parse().ok()
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn encode_header(h: &EntryHeader) -> String {
    let t = h.mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{MAGIC} {VERSION} owner={} backend={} key={} size={} mtime={}.{} mode={} uid={} gid={}\n",
        encode(&h.owner),
        encode(&h.backend),
        encode(&h.key),
        h.size,
        t.as_secs(),
        t.subsec_nanos(),
        opt(h.posix.mode),
        opt(h.posix.uid),
        opt(h.posix.gid)
    )
}

/// Parse a header line (without its newline).
pub(crate) fn parse_header(line: &str) -> Option<EntryHeader> {
    let mut fields = line.split(' ');
    if fields.next()? != MAGIC || fields.next()? != VERSION {
        return None;
    }
    let mut get = |name: &str| -> Option<String> { decode(fields.next()?.strip_prefix(name)?.strip_prefix('=')?) };
    let owner = get("owner")?;
    let backend = get("backend")?;
    let key = get("key")?;
    let size = get("size")?.parse().ok()?;
    let (secs, nanos) = get("mtime")?
        .split_once('.')
        .map(|(s, n)| (s.to_owned(), n.to_owned()))?;
    let mtime = UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?);
    let mut num = |name: &str| -> Option<Option<u32>> {
        let v = get(name)?;
        if v == "-" {
            Some(None)
        } else {
            v.parse().ok().map(Some)
        }
    };
    let posix = PosixAttrs {
        mode: num("mode")?,
        uid: num("uid")?,
        gid: num("gid")?,
    };
    Some(EntryHeader {
        owner,
        backend,
        key,
        size,
        mtime,
        posix,
    })
}

/// Read the header of the staged file `file`; returns it and where the content starts.
/// Refuses a file whose length does not match its header (not written by byosfs, or damaged).
pub fn read_header(file: &File) -> io::Result<(EntryHeader, u64)> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], u64::try_from(got).unwrap_or(u64::MAX))?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("write-back file: {what}"));
    let end = buf[..got]
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| bad("no header"))?;
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| bad("header not UTF-8"))?;
    let header = parse_header(line).ok_or_else(|| bad("damaged header"))?;
    let offset = u64::try_from(end + 1).unwrap_or(u64::MAX);
    if file.metadata()?.len() != offset.saturating_add(header.size) {
        return Err(bad("length does not match its header"));
    }
    Ok((header, offset))
}

/// Options for staged files: never through a symlink, private to the mounting user.
fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).mode(0o600);
    o
}

/// Open the staged file at `path` for reading.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    open_options().read(true).open(path)
}

/// An entry being written (blocking IO: call from the blocking pool).
#[derive(Debug)]
pub(crate) struct EntryWriter {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<File>,
    header_len: u64,
    expected: u64,
    written: u64,
}

impl EntryWriter {
    /// Create the temporary file of entry `id` in `root`, holding `header`.
    pub(crate) fn create(root: &Path, id: u64, header: &EntryHeader) -> io::Result<Self> {
        let (name, tmp_name) = names(id);
        let tmp = root.join(tmp_name);
        let mut file = open_options().write(true).create_new(true).open(&tmp)?;
        let text = encode_header(header);
        let mut w = Self {
            tmp,
            path: root.join(name),
            file: None,
            header_len: u64::try_from(text.len()).unwrap_or(u64::MAX),
            expected: header.size,
            written: 0,
        };
        file.write_all(text.as_bytes())?;
        w.file = Some(file);
        Ok(w)
    }

    /// Append content.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("entry already finished"))?;
        file.write_all(data)?;
        self.written += u64::try_from(data.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// Make the entry durable under its final name; returns the path and the content offset.
    pub(crate) fn finish(mut self) -> io::Result<(PathBuf, u64)> {
        if self.written != self.expected {
            return Err(io::Error::other(format!(
                "staged {} bytes, expected {}",
                self.written, self.expected
            )));
        }
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("entry already finished"))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok((self.path.clone(), self.header_len))
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not finished: the close it belongs to fails, nothing is queued.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_from_final_names_only() {
        assert_eq!(id_of(&names(10).0), Some(10));
        assert_eq!(id_of(&names(9).0), Some(9));
        assert_eq!(id_of(&names(7).1), None, "a temporary name is not a closed file");
        assert_eq!(id_of("w1.journal"), None);
        // The order names sort in is not the order of closes; ids are.
        assert!(names(10).0 < names(9).0);
    }

    fn header(size: u64) -> EntryHeader {
        EntryHeader {
            owner: "acme".into(),
            backend: "s3://b/acme/".into(),
            key: "dir with space/caf\u{e9}\n%.txt".into(),
            size,
            mtime: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            posix: PosixAttrs {
                mode: Some(0o100_644),
                uid: None,
                gid: Some(7),
            },
        }
    }

    #[test]
    fn round_trips_and_is_durable_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EntryWriter::create(dir.path(), 3, &header(11)).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert!(
            !dir.path().join("w3.wb").exists(),
            "not under its final name before finish"
        );
        let (path, offset) = w.finish().unwrap();
        assert_eq!(path, dir.path().join("w3.wb"));
        let f = open(&path).unwrap();
        let (h, off) = read_header(&f).unwrap();
        assert_eq!((h, off), (header(11), offset));
        let mut body = vec![0u8; 11];
        f.read_exact_at(&mut body, off).unwrap();
        assert_eq!(&body, b"hello world");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn unfinished_or_short_entries_leave_nothing_and_damaged_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EntryWriter::create(dir.path(), 1, &header(5)).unwrap();
        w.write(b"abc").unwrap();
        assert!(w.finish().is_err(), "fewer bytes than the header says");
        drop(EntryWriter::create(dir.path(), 2, &header(5)).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A finished entry whose content was cut afterwards.
        let mut w = EntryWriter::create(dir.path(), 4, &header(5)).unwrap();
        w.write(b"abcde").unwrap();
        let (path, _) = w.finish().unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(f.metadata().unwrap().len() - 1).unwrap();
        assert!(read_header(&open(&path).unwrap()).is_err());
        assert!(parse_header("byosfs-writeback 1 owner=a").is_none());
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), dir.path().join(".w9.wb.tmp")).unwrap();
        assert!(EntryWriter::create(dir.path(), 9, &header(0)).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
