//! fsx-style random-operation checker on a real mount over the loopback S3 server (issue 23).
//!
//! One file, opened `O_RDWR|O_CREAT` through the mount, receives a seeded, bounded sequence of
//! writes (some past EOF, leaving holes), reads, `ftruncate` (grow and shrink), `MAP_SHARED` mmap
//! reads and writes (`msync(MS_SYNC)`), `fsync` and close + reopen. A `Vec<u8>` is the reference:
//! every read and the size after every operation must match it. After each close + reopen and at
//! the end the whole file is compared both through the mount and straight from the server. The
//! part size is the 5 MiB minimum and files reach ~16 MiB, so multipart uploads, part replacement
//! and staging are exercised. On mismatch the seed, the op index and the last ops are printed:
//! the seeds are fixed, so a failure replays exactly.

// mmap/msync/munmap have no safe wrapper in the tree's dependencies; each block says why it holds.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::mount::{fuse_available, s3_config, Mount};
use common::s3server::TestS3Server;

const MIB: u64 = 1 << 20;
/// Upper bound on the file size: three 5 MiB parts and a tail.
const MAX_SIZE: u64 = 16 * MIB;
/// How many recent ops a failure report shows.
const HISTORY: usize = 20;

fn mount(server: &TestS3Server) -> Mount {
    let backend = r#"
request_timeout = "5s"
connect_timeout = "1s"
max_attempts = 2
"#;
    let rest = r#"
[cache]
memory = "128MiB"

[write]
part_size = "5MiB"
memory = "64MiB"
staging_dir = "./staging"

[[tenants]]
name = "acme"
backend = "s3"
prefix = "acme/"
"#;
    Mount::start_s3(&s3_config(&server.endpoint, backend, rest), server)
}

/// SplitMix64: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A length: mostly small, sometimes large enough to span part boundaries.
    fn len(&mut self) -> u64 {
        match self.next() % 10 {
            0 => self.range(1, 6 * MIB),
            1..=3 => self.range(1, 256 * 1024),
            _ => self.range(1, 16 * 1024),
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// The run: the open file, the reference and what is needed to report a failure.
struct Fsx<'a> {
    seed: u64,
    server: &'a TestS3Server,
    mount: &'a Mount,
    path: PathBuf,
    key: String,
    file: Option<File>,
    model: Vec<u8>,
    op: usize,
    history: VecDeque<String>,
}

impl Fsx<'_> {
    fn open(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .unwrap_or_else(|e| self.fail(&format!("open: {e}")))
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("file is open between ops")
    }

    fn fail(&self, what: &str) -> ! {
        let ops: Vec<&str> = self.history.iter().map(String::as_str).collect();
        let log = self.mount.log();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "fsx seed {:#x}, op {}: {what}\nlast {} ops (oldest first):\n  {}\nmount log tail:\n{}",
            self.seed,
            self.op,
            ops.len(),
            ops.join("\n  "),
            tail.join("\n")
        );
    }

    fn record(&mut self, desc: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {desc}", self.op));
    }

    /// The first differing byte, for a readable message.
    fn compare(&self, what: &str, base: u64, got: &[u8], want: &[u8]) {
        if got == want {
            return;
        }
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        let detail = match first {
            Some(i) => format!(
                "first difference at file offset {} (got {:#04x}, want {:#04x})",
                base + i as u64,
                got[i],
                want[i]
            ),
            None => format!("length {} vs expected {}", got.len(), want.len()),
        };
        self.fail(&format!("{what}: {detail}"));
    }

    fn pread_all(&self, off: u64, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            match self.file().read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) => self.fail(&format!("pread at {}: {e}", off + done as u64)),
            }
        }
        buf.truncate(done);
        buf
    }

    fn check_size(&self) {
        let size = self
            .file()
            .metadata()
            .unwrap_or_else(|e| self.fail(&format!("fstat: {e}")))
            .len();
        if size != self.model.len() as u64 {
            self.fail(&format!("fstat size {size}, expected {}", self.model.len()));
        }
    }

    /// Whole file through the open fd, through a fresh open, and (when `server`) from the bucket.
    fn check_whole(&self, server: bool) {
        let got = self.pread_all(0, self.model.len() + 1);
        self.compare("whole file via fd", 0, &got, &self.model);
        let fresh = std::fs::read(&self.path).unwrap_or_else(|e| self.fail(&format!("read path: {e}")));
        self.compare("whole file via fresh open", 0, &fresh, &self.model);
        if server {
            let direct = self
                .server
                .object(&self.key)
                .unwrap_or_else(|| self.fail("object missing on the server"));
            self.compare("object on the server", 0, &direct, &self.model);
        }
    }

    fn write(&mut self, rng: &mut Rng) {
        let len = self.model.len() as u64;
        let off = if rng.chance(20) {
            len + rng.range(0, 2 * MIB) // past EOF: leaves a hole
        } else {
            rng.range(0, len)
        };
        let off = off.min(MAX_SIZE - 1);
        let n = rng.len().min(MAX_SIZE - off);
        self.record(format!("write off={off} len={n} (size {len})"));
        let data = rng.bytes(n as usize);
        if let Err(e) = self.file().write_all_at(&data, off) {
            self.fail(&format!("pwrite: {e}"));
        }
        let end = (off + n) as usize;
        if self.model.len() < end {
            self.model.resize(end, 0);
        }
        self.model[off as usize..end].copy_from_slice(&data);
    }

    fn read(&mut self, rng: &mut Rng) {
        let len = self.model.len() as u64;
        let off = rng.range(0, len + 4096);
        let n = rng.len();
        self.record(format!("read off={off} len={n} (size {len})"));
        let got = self.pread_all(off, n as usize);
        let lo = (off as usize).min(self.model.len());
        let hi = ((off + n) as usize).min(self.model.len());
        self.compare("read", off, &got, &self.model[lo..hi]);
    }

    fn truncate(&mut self, rng: &mut Rng) {
        let len = self.model.len() as u64;
        let size = if rng.chance(50) {
            rng.range(0, len)
        } else {
            (len + rng.range(0, 3 * MIB)).min(MAX_SIZE)
        };
        self.record(format!("ftruncate {len} -> {size}"));
        if let Err(e) = self.file().set_len(size) {
            self.fail(&format!("ftruncate: {e}"));
        }
        self.model.resize(size as usize, 0);
    }

    /// A page-aligned mapping covering `off..off + n`, which must lie inside the file.
    fn mapped(&mut self, rng: &mut Rng, write: bool) {
        let len = self.model.len() as u64;
        if len == 0 {
            return;
        }
        let off = rng.range(0, len - 1);
        let n = rng.len().min(len - off);
        let kind = if write { "mmap-write" } else { "mmap-read" };
        self.record(format!("{kind} off={off} len={n} (size {len})"));
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let map_off = off - off % page;
        let map_len = (off + n - map_off) as usize;
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of an fd we own; the range lies
        // inside the file (off + n <= size), so no access below touches pages past EOF.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                prot,
                libc::MAP_SHARED,
                self.file().as_raw_fd(),
                map_off as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            self.fail(&format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let skip = (off - map_off) as usize;
        let (lo, hi) = (off as usize, (off + n) as usize);
        if write {
            let data = rng.bytes(n as usize);
            // SAFETY: `base` maps `map_len` writable bytes and `skip + n == map_len`; `data` is a
            // separate heap buffer, so the regions do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.cast::<u8>().add(skip), data.len()) };
            // SAFETY: `base`/`map_len` are exactly the mapping created above.
            let rc = unsafe { libc::msync(base, map_len, libc::MS_SYNC) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: unmapping the mapping created above; nothing refers to it afterwards.
                unsafe { libc::munmap(base, map_len) };
                self.fail(&format!("msync: {e}"));
            }
            self.model[lo..hi].copy_from_slice(&data);
        } else {
            // SAFETY: `base` maps `map_len` readable bytes of a file at least `off + n` long; the
            // slice is copied out before the mapping is removed.
            let got = unsafe { std::slice::from_raw_parts(base.cast::<u8>().add(skip), n as usize) }.to_vec();
            // SAFETY: unmapping the mapping created above; `got` is an owned copy.
            unsafe { libc::munmap(base, map_len) };
            self.compare("mmap-read", off, &got, &self.model[lo..hi]);
            return;
        }
        // SAFETY: unmapping the mapping created above; nothing refers to it afterwards.
        unsafe { libc::munmap(base, map_len) };
    }

    fn fsync(&mut self) {
        self.record("fsync".into());
        if let Err(e) = self.file().sync_all() {
            self.fail(&format!("fsync: {e}"));
        }
    }

    /// fsync, close, check the object on the server and the file through the mount, reopen.
    fn reopen(&mut self) {
        self.fsync();
        self.record("close + reopen".into());
        drop(self.file.take());
        let direct = self
            .server
            .object(&self.key)
            .unwrap_or_else(|| self.fail("object missing after close"));
        self.compare("object on the server after close", 0, &direct, &self.model);
        self.file = Some(self.open());
        self.check_whole(false);
    }
}

fn run(seed: u64, ops: usize) {
    if !fuse_available() {
        return;
    }
    let server = TestS3Server::start(&["media"]);
    let m = mount(&server);
    let name = format!("fsx-{seed:x}.bin");
    let mut fsx = Fsx {
        seed,
        server: &server,
        mount: &m,
        path: m.path().join("acme").join(&name),
        key: format!("acme/{name}"),
        file: None,
        model: Vec::new(),
        op: 0,
        history: VecDeque::with_capacity(HISTORY),
    };
    fsx.file = Some(fsx.open());
    let mut rng = Rng(seed);
    for op in 0..ops {
        fsx.op = op;
        match rng.next() % 100 {
            0..=29 => fsx.write(&mut rng),
            30..=49 => fsx.read(&mut rng),
            50..=59 => fsx.truncate(&mut rng),
            60..=74 => fsx.mapped(&mut rng, false),
            75..=89 => fsx.mapped(&mut rng, true),
            90..=95 => fsx.fsync(),
            _ => fsx.reopen(),
        }
        fsx.check_size();
    }
    fsx.op = ops;
    fsx.reopen();
    fsx.check_whole(true);
}

#[test]
fn fsx_seed_1() {
    run(0x00f5_0001, 500);
}

#[test]
fn fsx_seed_2() {
    run(0x00f5_0002, 500);
}
