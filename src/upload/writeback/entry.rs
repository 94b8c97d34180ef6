//! One closed file staged for write-back, on disk: `<staging root>/w<id>.wb`, a header line
//! naming the object, the file's bytes, and a trailer that marks the entry complete.
//!
//! ```text
//! byosfs-writeback 2 owner=<tenant> backend=<describe> key=<key> size=<n> mtime=<s>.<ns> mode=<m|-> uid=<u|-> gid=<g|->
//! <n bytes>
//! byosfs-wb-end <8 hex digits: CRC32C of the header line and the n bytes>\n
//! ```
//!
//! Durability with one fsync per close: the name `w<id>.wb` is created empty *before* the
//! close that uses it, in batches ([`Slots`]: [`SLOT_BATCH`] names, then one directory
//! fsync), so at close only the file's own content and size have to reach the disk: one
//! `fsync` of the file, then `close()` returns. The ids are handed out in close order, so
//! the name still tells recovery which of two versions of a key is newer.
//!
//! What a crash can leave, and what recovery makes of it ([`check`]): an empty file is a
//! name never used ([`Invalid::Unused`]); a file cut short or without its trailer is a close
//! that never returned ([`Invalid::Incomplete`]: like the temporary files of version 1, it
//! is deleted); a complete-looking file whose checksum or header is wrong was damaged on
//! disk ([`Invalid::Damaged`]: kept for inspection, never uploaded). Only a file with a
//! valid trailer is adopted, and a close returned only after its trailer was fsynced.
//!
//! Version 1 (before 2026-12-05) had no trailer; its files were written under a temporary
//! name, fsynced and renamed into place (two fsyncs per close), so a version-1 file under
//! its final name is whole when its length matches its header: such files left by an older
//! byosfs are still adopted. Files are created `O_EXCL`, opened `O_NOFOLLOW`, mode 0600,
//! inside the uploader's private root (see `root.rs`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::PosixAttrs;
use crate::upload::journal::{decode, encode};

/// File name suffix of a staged write-back file.
pub const WB_SUFFIX: &str = ".wb";
const MAGIC: &str = "byosfs-writeback";
/// Written by this version: header, content, trailer.
const VERSION: &str = "2";
/// Header, content, no trailer (made durable by rename; still adopted).
const VERSION_RENAMED: &str = "1";
/// Longest header read back (a key is at most 1 KiB, 3 KiB percent-encoded).
const MAX_HEADER: usize = 16 * 1024;
const TRAILER_MAGIC: &str = "byosfs-wb-end";
/// `byosfs-wb-end ` + 8 hex digits + `\n`.
const TRAILER_BYTES: usize = 23;
const TRAILER_LEN: u64 = TRAILER_BYTES as u64;
/// Names created ahead per directory fsync. Each costs an inode until used (an empty file,
/// deleted at exit); 64 make the directory fsync 1/64 of a close's cost.
pub(crate) const SLOT_BATCH: u64 = 64;

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

/// File name of entry `id`.
pub(crate) fn name(id: u64) -> String {
    format!("w{id}{WB_SUFFIX}")
}

/// The id in a staged file's name ([`name`]`(id)`); `None` for any other name.
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

fn trailer(crc: u32) -> String {
    format!("{TRAILER_MAGIC} {crc:08x}\n")
}

/// Parse a header line (without its newline); also says whether it has a trailer (version 2).
pub(crate) fn parse_header(line: &str) -> Option<(EntryHeader, bool)> {
    let mut fields = line.split(' ');
    if fields.next()? != MAGIC {
        return None;
    }
    let trailed = match fields.next()? {
        VERSION => true,
        VERSION_RENAMED => false,
        _ => return None,
    };
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
    let header = EntryHeader {
        owner,
        backend,
        key,
        size,
        mtime,
        posix,
    };
    Some((header, trailed))
}

/// Why a staged file is not a complete closed version.
#[derive(Debug)]
pub enum Invalid {
    /// Empty: a name made ahead that no close used.
    Unused,
    /// Cut short or without its trailer: its close never returned (a crash while staging).
    Incomplete(&'static str),
    /// Complete in length but wrong inside (checksum, header): damaged on disk or not ours.
    Damaged(&'static str),
    /// It could not be read.
    Io(io::Error),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unused => f.write_str("write-back file: unused (empty)"),
            Self::Incomplete(why) => write!(f, "write-back file incomplete: {why}"),
            Self::Damaged(why) => write!(f, "write-back file damaged: {why}"),
            Self::Io(e) => write!(f, "write-back file unreadable: {e}"),
        }
    }
}

impl From<io::Error> for Invalid {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Read and validate the staged file `file`: its header and where the content starts, if it
/// holds a complete closed version (header, all its bytes, a trailer whose checksum matches).
pub fn check(file: &File) -> Result<(EntryHeader, u64), Invalid> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Err(Invalid::Unused);
    }
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
    let Some(end) = buf[..got].iter().position(|b| *b == b'\n') else {
        // The header is written in one go before any content: without its newline the file
        // was cut short, unless it is longer than any header (then it is not ours).
        return Err(if got < MAX_HEADER {
            Invalid::Incomplete("no whole header")
        } else {
            Invalid::Damaged("no header")
        });
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| Invalid::Damaged("header not UTF-8"))?;
    let (header, trailed) = parse_header(line).ok_or(Invalid::Damaged("header"))?;
    let offset = u64::try_from(end + 1).unwrap_or(u64::MAX);
    let body_end = offset.saturating_add(header.size);
    if !trailed {
        // Version 1 files reached their final name only whole (renamed after an fsync).
        return if len == body_end {
            Ok((header, offset))
        } else {
            Err(Invalid::Damaged("length does not match its header"))
        };
    }
    let expected = body_end.saturating_add(TRAILER_LEN);
    if len < expected {
        return Err(Invalid::Incomplete("shorter than its header says"));
    }
    if len > expected {
        return Err(Invalid::Damaged("longer than its header says"));
    }
    let mut tail = [0u8; TRAILER_BYTES];
    file.read_exact_at(&mut tail, body_end)?;
    let crc = checksum(file, body_end)?;
    if tail != trailer(crc).as_bytes() {
        return Err(Invalid::Damaged("trailer or checksum does not match"));
    }
    Ok((header, offset))
}

/// CRC32C of the first `len` bytes of `file`.
fn checksum(file: &File, len: u64) -> io::Result<u32> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut crc, mut at) = (0u32, 0u64);
    while at < len {
        let n = usize::try_from((len - at).min(1 << 20)).unwrap_or(1 << 20);
        file.read_exact_at(&mut buf[..n], at)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(crc)
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

/// The names of a staging root's write-back files, created empty ahead of the closes that
/// use them, so that a close needs no directory fsync of its own.
#[derive(Debug)]
pub(crate) struct Slots {
    root: PathBuf,
    /// Every id below this has had its name created (or skipped) and the directory fsynced.
    ready: Mutex<u64>,
}

impl Slots {
    /// Names in `root`.
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            ready: Mutex::new(0),
        }
    }

    /// The directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where entry `id` lives.
    pub(crate) fn path(&self, id: u64) -> PathBuf {
        self.root.join(name(id))
    }

    /// Ids below `id` are never prepared (taken by adopted files, which bring their own).
    pub(crate) fn skip_to(&self, id: u64) {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        *ready = (*ready).max(id);
    }

    /// Make sure entry `id`'s name exists and is durable: when it does not yet, create the
    /// names up to `id + SLOT_BATCH` and fsync the directory once for all of them.
    fn prepare(&self, id: u64) -> io::Result<()> {
        // Held across the creates and the fsync (blocking pool): a writer whose id is below
        // `ready` must find its name durable.
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if id < *ready {
            return Ok(());
        }
        let end = id.saturating_add(SLOT_BATCH);
        for n in *ready..end {
            match open_options().write(true).create_new(true).open(self.path(n)) {
                Ok(_) => {}
                // Something is there already; the writer that gets this id checks what.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        File::open(&self.root)?.sync_all()?;
        *ready = end;
        Ok(())
    }
}

/// An entry being written (blocking IO: call from the blocking pool).
#[derive(Debug)]
pub(crate) struct EntryWriter {
    path: PathBuf,
    file: Option<File>,
    header_len: u64,
    expected: u64,
    written: u64,
    /// CRC32C of everything written so far (header and content).
    crc: u32,
}

impl EntryWriter {
    /// Start entry `id` in `slots`' root with `header`.
    pub(crate) fn create(slots: &Slots, id: u64, header: &EntryHeader) -> io::Result<Self> {
        slots.prepare(id)?;
        let path = slots.path(id);
        let mut file = open_options().write(true).open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("write-back file {} is not a fresh empty file", path.display()),
            ));
        }
        let text = encode_header(header);
        file.write_all(text.as_bytes())?;
        Ok(Self {
            path,
            file: Some(file),
            header_len: u64::try_from(text.len()).unwrap_or(u64::MAX),
            expected: header.size,
            written: 0,
            crc: crc32c::crc32c(text.as_bytes()),
        })
    }

    /// Append content.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("entry already finished"))?;
        file.write_all(data)?;
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.written += u64::try_from(data.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// Make the entry durable (trailer, then one fsync); returns the path and the content
    /// offset.
    pub(crate) fn finish(mut self) -> io::Result<(PathBuf, u64)> {
        if self.written != self.expected {
            return Err(io::Error::other(format!(
                "staged {} bytes, expected {}",
                self.written, self.expected
            )));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("entry already finished"))?;
        file.write_all(trailer(self.crc).as_bytes())?;
        // Data and size; the name was made durable by `Slots::prepare`.
        file.sync_all()?;
        self.file = None;
        Ok((self.path.clone(), self.header_len))
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not finished: the close it belongs to fails, nothing is queued.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_from_names() {
        assert_eq!(id_of(&name(10)), Some(10));
        assert_eq!(id_of(&name(9)), Some(9));
        assert_eq!(
            id_of(".w7.wb.tmp"),
            None,
            "a version 1 temporary name is not a closed file"
        );
        assert_eq!(id_of("w1.journal"), None);
        // The order names sort in is not the order of closes; ids are.
        assert!(name(10) < name(9));
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

    fn staged(slots: &Slots, id: u64, body: &[u8]) -> PathBuf {
        let mut w = EntryWriter::create(slots, id, &header(body.len() as u64)).unwrap();
        w.write(body).unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn round_trips_and_names_are_made_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::new(dir.path().to_path_buf());
        let mut w = EntryWriter::create(&slots, 3, &header(11)).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert!(
            matches!(check(&open(&slots.path(3)).unwrap()), Err(Invalid::Incomplete(_))),
            "not a closed version before finish"
        );
        let (path, offset) = w.finish().unwrap();
        assert_eq!(path, dir.path().join("w3.wb"));
        let f = open(&path).unwrap();
        let (h, off) = check(&f).unwrap();
        assert_eq!((h, off), (header(11), offset));
        let mut body = vec![0u8; 11];
        f.read_exact_at(&mut body, off).unwrap();
        assert_eq!(&body, b"hello world");
        // Names up to 3+SLOT_BATCH were made in one go (those below 3 too: an earlier close
        // may not have started yet); the others are empty and unused.
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count() as u64,
            3 + SLOT_BATCH,
            "one batch of names"
        );
        assert!(matches!(check(&open(&slots.path(4)).unwrap()), Err(Invalid::Unused)));
        assert!(!slots.path(3 + SLOT_BATCH).exists());
        staged(&slots, 4, b"x");
        assert!(
            !slots.path(3 + SLOT_BATCH).exists(),
            "no new batch while names are left"
        );
    }

    /// Every way a file can be torn or damaged is refused: cut anywhere (a crash while the
    /// close was staging it), a flipped byte, a bad trailer, trailing garbage.
    #[test]
    fn torn_or_damaged_entries_are_never_complete() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::new(dir.path().to_path_buf());
        let body = b"abcdefghij";
        let good = std::fs::read(staged(&slots, 0, body)).unwrap();
        let probe = dir.path().join("probe.wb");
        let verdict = |bytes: &[u8]| {
            std::fs::write(&probe, bytes).unwrap();
            check(&open(&probe).unwrap())
        };
        assert!(verdict(&good).is_ok());
        for cut in 1..good.len() {
            let v = verdict(&good[..cut]);
            assert!(matches!(v, Err(Invalid::Incomplete(_))), "cut at {cut}: {v:?}");
        }
        assert!(matches!(verdict(b""), Err(Invalid::Unused)));
        let header_len = good.iter().position(|b| *b == b'\n').unwrap() + 1;
        for at in [0, 5, header_len + 3, good.len() - 5, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            let v = verdict(&bad);
            assert!(matches!(v, Err(Invalid::Damaged(_))), "byte {at} flipped: {v:?}");
        }
        let mut longer = good.clone();
        longer.push(b'\n');
        assert!(matches!(verdict(&longer), Err(Invalid::Damaged(_))));
        assert!(parse_header("byosfs-writeback 2 owner=a").is_none());
    }

    #[test]
    fn version_1_files_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w1.wb");
        let mut text = encode_header(&header(5)).replacen(" 2 ", " 1 ", 1).into_bytes();
        let offset = text.len() as u64;
        text.extend_from_slice(b"abcde");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(check(&open(&path).unwrap()).unwrap(), (header(5), offset));
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        assert!(matches!(check(&open(&path).unwrap()), Err(Invalid::Damaged(_))));
    }

    #[test]
    fn failed_writers_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::new(dir.path().to_path_buf());
        let mut w = EntryWriter::create(&slots, 1, &header(5)).unwrap();
        w.write(b"abc").unwrap();
        assert!(w.finish().is_err(), "fewer bytes than the header says");
        drop(EntryWriter::create(&slots, 2, &header(5)).unwrap());
        assert!(!slots.path(1).exists() && !slots.path(2).exists());
        // A name in use is never written over.
        staged(&slots, 3, b"abcde");
        assert!(EntryWriter::create(&slots, 3, &header(5)).is_err());
        assert!(check(&open(&slots.path(3)).unwrap()).is_ok());
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), dir.path().join("w9.wb")).unwrap();
        let slots = Slots::new(dir.path().to_path_buf());
        assert!(EntryWriter::create(&slots, 9, &header(0)).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
