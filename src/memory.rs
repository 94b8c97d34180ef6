//! Handing memory the allocator keeps free back to the OS after a large, short-lived parse.

extern "C" {
    /// mimalloc's `mi_collect`: free what it can, and with `force` return freed pages to the
    /// OS now instead of after its purge delay. Part of the C library `mimalloc` links.
    fn mi_collect(force: bool);
}

/// Return the memory the config parser used and freed to the OS. Parsing a config of 100,000
/// tenants builds a TOML document of ~100 MiB that is dropped once the typed config exists;
/// mimalloc would keep those pages resident for the life of the mount (RSS after mounting
/// 101,000 tenants: 214 MiB without this, about 105 MiB with it; after a reload of that
/// config up to 370 MiB without it; docs/scale.md). mimalloc collects the calling thread's
/// heap, so call it on the thread that parsed, right after the parse.
#[allow(unsafe_code)] // one allocator call; the `mimalloc` crate has no safe wrapper for it
pub fn release_free_memory() {
    // SAFETY: mi_collect takes a plain bool, may be called from any thread at any time, and
    // only reorganises the allocator's own free memory.
    unsafe { mi_collect(true) };
}
