//! "No allocation larger than the input": a counting allocator watches `Gguf::parse` on the inputs
//! that would make a naive reader allocate the most: counts that claim far more than the file holds,
//! and files packed with the smallest possible key-value and tensor records.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cortex_gguf::{GgmlType, Gguf, GgufBuilder};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator, only counting.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        TOTAL.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (largest single allocation, total allocated) while parsing `bytes`.
fn measure(bytes: &[u8]) -> (usize, usize, bool) {
    LARGEST.store(0, Ordering::Relaxed);
    TOTAL.store(0, Ordering::Relaxed);
    let ok = Gguf::parse(bytes).is_ok();
    (
        LARGEST.load(Ordering::Relaxed),
        TOTAL.load(Ordering::Relaxed),
        ok,
    )
}

#[test]
fn the_index_never_outgrows_the_input() {
    // 60,000 one-byte keys with u8 values: the densest key-value records there are.
    let mut dense_kv = GgufBuilder::new();
    for i in 0..60_000u32 {
        let key = format!("{i:x}");
        dense_kv = dense_kv.kv(key, 0u8);
    }
    // 20,000 zero-dimension tensors with one-byte names: the densest tensor records.
    let mut dense_tensors = GgufBuilder::new();
    for i in 0..20_000u32 {
        dense_tensors = dense_tensors.tensor(format!("{i:x}"), [], GgmlType::F32);
    }
    let mut lying_counts = GgufBuilder::new().kv("a", 1u8).build();
    lying_counts[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());

    for (name, bytes) in [
        ("dense key-values", dense_kv.build()),
        ("dense tensors", dense_tensors.build()),
        ("lying counts", lying_counts),
    ] {
        let (largest, total, _) = measure(&bytes);
        assert!(
            largest <= bytes.len(),
            "{name}: one allocation of {largest} bytes for {} bytes of input",
            bytes.len()
        );
        assert!(
            total <= 2 * bytes.len(),
            "{name}: {total} bytes allocated for {} bytes of input",
            bytes.len()
        );
    }
}
