//! Read-path scenarios over the in-memory backend, no kernel: request shapes of sequential and
//! media-player reads, interleaved streams on one handle, concurrency, stale objects.

// Test helpers outside `#[test]` functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{stream, StreamExt as _};
use tokio::sync::watch;

use byosfs::backend::memory::{InMemoryBackend, Op};
use byosfs::backend::{one_piece, Backend, BackendResult, BodyStream, ByteRange, ETag, Layer, ObjectMeta};
use byosfs::cache::{BlockCache, ObjectId};
use byosfs::read::{ObjectReader, ReadConfig, ReadError};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Which GETs a [`Recorder`] holds back until released.
type Gate = Box<dyn Fn(&str, ByteRange) -> bool + Send + Sync>;

/// Wraps the in-memory backend: records every GET range, and can hold back GETs matching a gate.
struct Recorder {
    inner: Arc<InMemoryBackend>,
    gets: Mutex<Vec<(String, ByteRange)>>,
    gate: Mutex<Option<Gate>>,
    open: watch::Sender<bool>,
    /// When set, streamed GETs deliver this many bytes at once and the rest only once `open`
    /// is true (a body still on the wire).
    trickle: Mutex<Option<usize>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(InMemoryBackend::new()),
            gets: Mutex::new(Vec::new()),
            gate: Mutex::new(None),
            open: watch::channel(true).0,
            trickle: Mutex::new(None),
        })
    }

    /// Hold back GETs for which `gate` is true until [`Recorder::release`].
    fn hold(&self, gate: impl Fn(&str, ByteRange) -> bool + Send + Sync + 'static) {
        *self.gate.lock().unwrap() = Some(Box::new(gate));
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }

    fn gets(&self) -> Vec<ByteRange> {
        self.gets.lock().unwrap().iter().map(|(_, r)| *r).collect()
    }

    fn reset(&self) {
        self.gets.lock().unwrap().clear();
        self.inner.reset_counts();
    }
}

#[async_trait]
impl Layer for Recorder {
    fn inner(&self) -> Arc<dyn Backend> {
        self.inner.clone()
    }
    fn describe(&self) -> String {
        "recorder".into()
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn get_range(&self, key: &str, range: ByteRange, if_match: Option<&ETag>) -> BackendResult<Bytes> {
        self.gets.lock().unwrap().push((key.to_owned(), range));
        let held = self.gate.lock().unwrap().as_ref().is_some_and(|g| g(key, range));
        if held {
            let mut rx = self.open.subscribe();
            rx.wait_for(|open| *open).await.unwrap();
        }
        self.inner.get_range(key, range, if_match).await
    }
    async fn get_range_stream(
        &self,
        key: &str,
        range: ByteRange,
        if_match: Option<&ETag>,
    ) -> BackendResult<BodyStream> {
        let Some(head) = *self.trickle.lock().unwrap() else {
            return Ok(one_piece(Layer::get_range(self, key, range, if_match).await?));
        };
        self.gets.lock().unwrap().push((key.to_owned(), range));
        let data = self.inner.get_range(key, range, if_match).await?;
        let (first, rest) = (data.slice(..head.min(data.len())), data.slice(head.min(data.len())..));
        let mut rx = self.open.subscribe();
        let rest = async move {
            rx.wait_for(|open| *open).await.unwrap();
            Ok(rest)
        };
        Ok(Box::pin(
            stream::once(async move { Ok(first) }).chain(stream::once(rest)),
        ))
    }
}

fn pattern(len: u64, seed: u8) -> Bytes {
    // Period 251 (prime) so a misplaced block shows up as wrong bytes.
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Scaled-down read-ahead so scenarios stay small: 64 KiB blocks, windows 256 KiB → 4 MiB.
fn scaled() -> (ReadConfig, u64) {
    let config = ReadConfig {
        initial_window: 256 * KIB,
        max_window: 4 * MIB,
        max_request: MIB,
        max_streams: 4,
        sequential_tolerance: 512 * KIB,
        release_passed: true,
    };
    (config, 64 * KIB)
}

async fn open(backend: &Arc<Recorder>, key: &str, cache: &Arc<BlockCache>, config: ReadConfig) -> ObjectReader {
    let meta = Backend::head(backend.as_ref(), key).await.unwrap();
    ObjectReader::new(
        backend.clone(),
        ObjectId::new(1, &meta),
        cache.clone(),
        config,
        Default::default(),
    )
}

/// Read `[from, to)` in `chunk`-sized reads, checking every byte against `data`.
async fn read_seq(reader: &ObjectReader, data: &Bytes, from: u64, to: u64, chunk: u64) {
    let mut off = from;
    while off < to {
        let n = chunk.min(to - off);
        let got = reader.read(off, usize::try_from(n).unwrap()).await.unwrap();
        assert_eq!(got, data.slice(off as usize..(off + n) as usize), "read({off}, {n})");
        off += n;
    }
}

#[tokio::test]
async fn sequential_read_issues_few_growing_requests() {
    let backend = Recorder::new();
    let size = 32 * MIB;
    let data = pattern(size, 0);
    backend.inner.insert("big", data.clone());
    let (config, block) = scaled();
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let reader = open(&backend, "big", &cache, config.clone()).await;
    read_seq(&reader, &data, 0, size, 128 * KIB).await;

    let gets = backend.gets();
    let sizes: Vec<u64> = gets.iter().map(ByteRange::len).collect();
    // Every byte fetched exactly once.
    assert_eq!(backend.inner.bytes_read(), size);
    // The first read's own block goes out alone, the rest of the small initial window beside
    // it; then sizes grow to max_request and stay there.
    assert_eq!(sizes[0], (128 * KIB).div_ceil(block) * block);
    assert_eq!(sizes[0] + sizes[1], config.initial_window);
    let ramp_end = sizes.iter().position(|&s| s == config.max_request).unwrap();
    assert!(sizes[..=ramp_end].windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= config.max_request));
    // 32 MiB in 1 MiB requests plus a ramp of quarter-window requests; 128 KiB reads without
    // read-ahead would be 256.
    assert!(gets.len() <= 44, "{} GETs: {sizes:?}", gets.len());
}

/// A lone small read (a database page, a probe after a seek) GETs exactly its bytes; when
/// the same spot is then read on sequentially, the stream fetches whole blocks and ramps.
#[tokio::test]
async fn lone_small_reads_fetch_exactly_their_bytes() {
    let backend = Recorder::new();
    let size = 16 * MIB;
    let data = pattern(size, 3);
    backend.inner.insert("db", data.clone());
    let (config, block) = scaled();
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let reader = open(&backend, "db", &cache, config).await;

    // Random 4 KiB pages, one crossing a block boundary: one GET of 4 KiB each.
    let pages = [5 * MIB + 8 * KIB, 11 * MIB, 3 * MIB - 2 * KIB, 7 * MIB + 60 * KIB];
    for &off in &pages {
        read_seq(&reader, &data, off, off + 4 * KIB, 4 * KIB).await;
    }
    let gets = backend.gets();
    let want: Vec<ByteRange> = pages.iter().map(|&o| ByteRange::new(o, o + 4 * KIB)).collect();
    assert_eq!(gets, want);
    assert_eq!(backend.inner.bytes_read(), 16 * KIB);
    assert_eq!(cache.len(), 0, "exact reads are not cached as blocks");

    // Half a block is still exact; a whole block is fetched as blocks.
    backend.reset();
    read_seq(&reader, &data, 9 * MIB, 9 * MIB + block / 2, block).await;
    read_seq(&reader, &data, 13 * MIB, 13 * MIB + block, block).await;
    let sizes: Vec<u64> = backend.gets().iter().map(ByteRange::len).collect();
    assert_eq!(sizes, vec![block / 2, block], "{:?}", backend.gets());

    // Reading on from the lone half block: the window starts where it ended, and grows.
    backend.reset();
    read_seq(&reader, &data, 9 * MIB + block / 2, 11 * MIB, 4 * KIB).await;
    let gets = backend.gets();
    assert_eq!(gets[0].start, 9 * MIB + block / 2, "nothing fetched twice: {gets:?}");
    assert!(gets.iter().all(|g| g.start >= 9 * MIB + block / 2), "{gets:?}");
    let sizes: Vec<u64> = gets.iter().map(ByteRange::len).collect();
    assert!(gets.len() <= 20, "sequential continuation ramps: {gets:?}");
    assert!(sizes[sizes.len() - 1] >= 4 * sizes[0], "requests grow: {sizes:?}");
}

/// After a small exact read that ends just past a block boundary, a read that continues the
/// stream from the block before needs the next block from its first byte: that block goes out
/// whole, once, not as a headless GET plus a whole-block GET.
#[tokio::test]
async fn a_read_straddling_into_a_headless_block_fetches_it_once() {
    let backend = Recorder::new();
    let size = 8 * MIB;
    let data = pattern(size, 9);
    backend.inner.insert("f", data.clone());
    let bs = byosfs::cache::DEFAULT_BLOCK_SIZE;
    let cache = Arc::new(BlockCache::new(64 * MIB, bs));
    let reader = open(&backend, "f", &cache, ReadConfig::default()).await;
    let h = 3 * bs + 4 * KIB;
    read_seq(&reader, &data, h - 8 * KIB, h, 8 * KIB).await;
    backend.reset();
    read_seq(&reader, &data, h - 6 * KIB, h + 64 * KIB, 70 * KIB).await;
    // Let the read-ahead the read started finish.
    read_seq(&reader, &data, h + 64 * KIB, 6 * MIB, 1024 * KIB).await;
    let gets = backend.gets();
    for (i, a) in gets.iter().enumerate() {
        for b in &gets[i + 1..] {
            assert!(
                a.end <= b.start || b.end <= a.start,
                "{a:?} and {b:?} overlap: {gets:?}"
            );
        }
    }
}

#[tokio::test]
async fn bytes_are_served_as_they_arrive_not_when_the_get_ends() {
    let backend = Recorder::new();
    let data = pattern(16 * MIB, 5);
    backend.inner.insert("obj", data.clone());
    // 1 MiB blocks; the 8 MiB first read goes out as four 2 MiB GETs, and 1.25 MiB of each
    // arrive at once.
    let cache = Arc::new(BlockCache::new(64 * MIB, MIB));
    let reader = Arc::new(open(&backend, "obj", &cache, ReadConfig::default()).await);
    *backend.trickle.lock().unwrap() = Some(usize::try_from(MIB + 256 * KIB).unwrap());
    backend.open.send_replace(false);
    let quick = Duration::from_secs(5);
    let r = reader.clone();
    let whole_read = tokio::spawn(async move { r.read(0, 8 * MIB as usize).await });
    for _ in 0..500 {
        if backend.gets().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut gets = backend.gets();
    gets.sort_by_key(|r| r.start);
    let want: Vec<ByteRange> = (0..4).map(|i| ByteRange::new(i * 2 * MIB, (i + 1) * 2 * MIB)).collect();
    assert_eq!(gets, want);
    // The first block is complete and the second partly there: the 8 MiB read cannot finish,
    // but reads of what has arrived must, from the block in flight as much as the finished one.
    let early = async {
        let a = reader.read(300 * KIB, 64 * KIB as usize).await.unwrap();
        let b = reader.read(MIB + 100 * KIB, 100 * KIB as usize).await.unwrap();
        (a, b)
    };
    let (a, b) = tokio::time::timeout(quick, early)
        .await
        .expect("bytes already received were held back");
    assert_eq!(a, data.slice(300 * 1024..364 * 1024));
    assert_eq!(b, data.slice((MIB + 100 * KIB) as usize..(MIB + 200 * KIB) as usize));
    // The first block went to the cache as soon as it was complete.
    assert!(cache.contains(reader.id(), 0));
    assert!(!cache.contains(reader.id(), 1));
    backend.release();
    let whole = tokio::time::timeout(quick, whole_read)
        .await
        .expect("released body")
        .unwrap()
        .unwrap();
    assert_eq!(whole, data.slice(..8 * MIB as usize));
    // The second read continued the stream (read-ahead beyond 8 MiB), but nothing re-fetched
    // the blocks in flight.
    let gets = backend.gets();
    assert!(gets[4..].iter().all(|r| r.start >= 8 * MIB), "{gets:?}");
}

#[tokio::test]
async fn sequential_read_with_default_config_uses_large_requests() {
    let backend = Recorder::new();
    let size = 48 * MIB;
    let data = pattern(size, 3);
    backend.inner.insert("big", data.clone());
    let cache = Arc::new(BlockCache::new(512 * MIB, byosfs::cache::DEFAULT_BLOCK_SIZE));
    let reader = open(&backend, "big", &cache, ReadConfig::default()).await;
    read_seq(&reader, &data, 0, size, 128 * KIB).await;
    let sizes: Vec<u64> = backend.gets().iter().map(ByteRange::len).collect();
    // The first read is at most half a block, so it GETs exactly its bytes; the read that
    // continues the stream fetches from where it ended: nothing is fetched twice.
    assert_eq!(sizes[0], 128 * KIB);
    assert_eq!(backend.inner.bytes_read(), size);
    assert!(sizes.iter().all(|&s| s <= 8 * MIB));
    // A ramp of quarter-window requests (several in flight at once), then 8 MiB requests.
    assert!(sizes.len() <= 24, "{sizes:?}");
    assert!(sizes.iter().filter(|&&s| s == 8 * MIB).count() >= 2, "{sizes:?}");
}

#[tokio::test]
async fn media_player_pattern_reads_correct_bytes_without_refetching() {
    let backend = Recorder::new();
    let size = 24 * MIB;
    let data = pattern(size, 7);
    backend.inner.insert("movie.mp4", data.clone());
    let (mut config, block) = scaled();
    // No kernel here, so no page cache to serve the tail again when playback reaches it:
    // keep passed blocks, as a mount does for a file whose pages the kernel does not keep.
    config.release_passed = false;
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let reader = open(&backend, "movie.mp4", &cache, config).await;

    // Probe: index at the end, header at the start, a seek into the middle, then play from there.
    read_seq(&reader, &data, size - MIB, size, 128 * KIB).await;
    read_seq(&reader, &data, 0, 64 * KIB, 64 * KIB).await;
    read_seq(&reader, &data, 12 * MIB, 12 * MIB + 256 * KIB, 128 * KIB).await;
    let before_play = backend.gets().len();
    read_seq(&reader, &data, 12 * MIB, size, 128 * KIB).await;

    // Each probe costs one small window (its own blocks, then the rest of the window);
    // playback ramps like a fresh sequential read.
    assert!(before_play <= 16, "{:?}", backend.gets());
    assert!(backend.gets().len() <= 40, "{:?}", backend.gets());
    // The tail read at the start is cached and not fetched again by playback.
    let ranges = backend.gets();
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            assert!(a.end <= b.start || b.end <= a.start, "overlapping GETs {a:?} {b:?}");
        }
    }
}

/// Two sequential readers at `a` and `b`, 16 MiB each in alternating 128 KiB reads, on `readers`
/// (one shared reader, or one each). Returns the GET sizes.
async fn two_streams(shared: bool, max_streams: usize) -> Vec<u64> {
    let backend = Recorder::new();
    let size = 64 * MIB;
    let data = pattern(size, 11);
    backend.inner.insert("av.mkv", data.clone());
    let (mut config, block) = scaled();
    config.max_streams = max_streams;
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let r1 = open(&backend, "av.mkv", &cache, config.clone()).await;
    let r2 = if shared {
        None
    } else {
        Some(open(&backend, "av.mkv", &cache, config).await)
    };
    let (a, b, chunk) = (0, 32 * MIB, 128 * KIB);
    let mut i = 0;
    while i < 16 * MIB {
        read_seq(&r1, &data, a + i, a + i + chunk, chunk).await;
        read_seq(r2.as_ref().unwrap_or(&r1), &data, b + i, b + i + chunk, chunk).await;
        i += chunk;
    }
    backend.gets().iter().map(ByteRange::len).collect()
}

#[tokio::test]
async fn interleaved_streams_on_one_handle_keep_large_requests() {
    let separate = two_streams(false, 4).await;
    let interleaved = two_streams(true, 4).await;
    assert!(
        interleaved.len() <= separate.len() + 2,
        "interleaved {} GETs vs separate {}",
        interleaved.len(),
        separate.len()
    );
    assert_eq!(interleaved.iter().max(), Some(&MIB));
    // With a single stream the same pattern collapses into small requests: the test can tell.
    let collapsed = two_streams(true, 1).await;
    assert!(
        collapsed.len() >= 4 * interleaved.len(),
        "single-stream {} GETs vs multi-stream {}",
        collapsed.len(),
        interleaved.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_on_one_handle() {
    let backend = Recorder::new();
    let size = 16 * MIB;
    let data = pattern(size, 5);
    backend.inner.insert("f", data.clone());
    let (mut config, block) = scaled();
    // The kernel's parallel reads span 12 × 128 KiB: the (real, default) tolerance covers that.
    config.sequential_tolerance = 2 * MIB;
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let reader = Arc::new(open(&backend, "f", &cache, config).await);
    backend.inner.set_get_delay(Some(Duration::from_millis(5)));
    // Like the kernel: batches of 12 parallel 128 KiB reads, completing in any order.
    let chunk = 128 * KIB;
    let mut off = 0;
    while off < size {
        let mut batch = Vec::new();
        for k in 0..12 {
            let o = off + k * chunk;
            if o >= size {
                break;
            }
            let r = reader.clone();
            batch.push((o, tokio::spawn(async move { r.read(o, 128 * 1024).await })));
        }
        for (o, h) in batch {
            let got = h.await.unwrap().unwrap();
            assert_eq!(got, data.slice(o as usize..((o + chunk).min(size)) as usize));
        }
        off += 12 * chunk;
    }
    // Out-of-order parallel reads are still one stream: no duplicate fetches, few requests.
    assert_eq!(backend.inner.bytes_read(), size);
    // 16 MiB in 1 MiB requests plus the ramp (the window doubles per half window consumed, in
    // quarter-window requests); 128 KiB requests would be 128.
    assert!(backend.gets().len() <= 40, "{:?}", backend.gets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_get_on_one_reader_does_not_block_another() {
    let backend = Recorder::new();
    let data = pattern(4 * MIB, 1);
    backend.inner.insert("slow", data.clone());
    backend.inner.insert("fast", data.clone());
    let (config, block) = scaled();
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let slow = Arc::new(open(&backend, "slow", &cache, config.clone()).await);
    let fast = open(&backend, "fast", &cache, config).await;
    backend.hold(|key, _| key == "slow");

    let s = slow.clone();
    let pending = tokio::spawn(async move { s.read(0, 4096).await });
    // Other readers (same cache, same backend) proceed while that GET hangs.
    tokio::time::timeout(Duration::from_secs(5), read_seq(&fast, &data, 0, 2 * MIB, 128 * KIB))
        .await
        .expect("a hanging GET on another reader blocked this one");
    assert!(!pending.is_finished());
    backend.release();
    assert_eq!(pending.await.unwrap().unwrap(), data.slice(..4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_does_not_block_another_stream_on_the_same_handle() {
    let backend = Recorder::new();
    let size = 16 * MIB;
    let data = pattern(size, 9);
    backend.inner.insert("f", data.clone());
    let (config, block) = scaled();
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let reader = Arc::new(open(&backend, "f", &cache, config).await);
    backend.hold(|_, r| r.start >= 8 * MIB);

    let r = reader.clone();
    let pending = tokio::spawn(async move { r.read(8 * MIB, 4096).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    tokio::time::timeout(Duration::from_secs(5), read_seq(&reader, &data, 0, 2 * MIB, 128 * KIB))
        .await
        .expect("a hanging GET of one stream blocked another stream of the same handle");
    assert!(!pending.is_finished());
    backend.release();
    let got = pending.await.unwrap().unwrap();
    assert_eq!(got, data.slice(8 * MIB as usize..8 * MIB as usize + 4096));
}

#[tokio::test]
async fn object_replaced_mid_read_is_object_changed_never_mixed() {
    let backend = Recorder::new();
    let size = 8 * MIB;
    let old = pattern(size, 0);
    backend.inner.insert("v", old.clone());
    let (config, block) = scaled();
    let cache = Arc::new(BlockCache::new(256 * MIB, block));
    let reader = open(&backend, "v", &cache, config).await;
    read_seq(&reader, &old, 0, MIB, 128 * KIB).await;

    backend.inner.insert("v", pattern(size, 100));
    backend.reset();
    let mut off = MIB;
    let err = loop {
        assert!(off < size, "read the whole object without noticing the change");
        match reader.read(off, 128 * 1024).await {
            // Whatever was fetched before the change is the old version, byte for byte.
            Ok(got) => assert_eq!(got, old.slice(off as usize..(off + 128 * KIB) as usize)),
            Err(e) => break e,
        }
        off += 128 * KIB;
    };
    assert!(
        matches!(err, ReadError::ObjectChanged { ref key } if key == "v"),
        "{err:?}"
    );
    assert!(backend.inner.count(Op::Get) >= 1);
    // A new handle on the new version reads the new bytes; the old blocks are not served.
    let fresh = open(&backend, "v", &cache, scaled().0).await;
    assert_eq!(fresh.read(0, 16).await.unwrap(), pattern(size, 100).slice(..16));
}
