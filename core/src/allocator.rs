//! The C allocator's settings for this process. glibc's malloc serves ONNX Runtime's tensors
//! and arenas as well as Rust's buffers; by default it raises its mmap threshold each time a
//! large block is freed (up to 32 MiB), after which freed tile buffers stay in per-thread
//! heaps instead of going back to the system. The resident peak then depends on the order of
//! frees: a tiled 448-px job peaked anywhere from 1.03 to 1.14 GiB from run to run, against a
//! planned 1.14 GiB. A fixed threshold makes blocks of 8 MiB and more (tensors, arenas) come
//! and go with mmap: the same job peaks at 0.86 GiB every run (within 5 MiB), at the same
//! speed within the run-to-run noise (a 512-px job in 192-px tiles: 1.99-2.22 s per
//! iteration, 1.97-2.23 s before).

/// Blocks at least this large are mapped and unmapped, not kept in malloc's heaps.
pub const MMAP_THRESHOLD_BYTES: usize = 8 << 20;

/// Fixes glibc's mmap threshold at `MMAP_THRESHOLD_BYTES` (which also stops it moving); a
/// `MALLOC_MMAP_THRESHOLD_` in the environment is left to win. Call before the process
/// allocates much; elsewhere than glibc it does nothing. Returns whether it was applied.
pub fn settle_large_blocks() -> bool {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return false;
    }
    set_mmap_threshold(MMAP_THRESHOLD_BYTES)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(bytes) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt only changes malloc's tuning parameters; it takes plain integers, is
    // safe to call at any time from any thread, and reports failure by returning 0.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> bool {
    false
}
