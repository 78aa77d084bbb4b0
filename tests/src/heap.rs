//! A counting global allocator for the tests that measure heap use (allocations in the decode
//! loop, the bytes the memory plan predicts, the peak of a save). A test binary registers it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;` and keeps to one test, so that no other
//! test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Allocations and reallocations so far, by every thread.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Live heap bytes, and the most there were since the last [`peak_growth`] began.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting.
pub struct Counting;

fn grew(n: usize) {
    ALLOCS.fetch_add(1, Ordering::SeqCst);
    let live = LIVE.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(live, Ordering::SeqCst);
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The old and new blocks may both be live while the bytes move.
        grew(new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations and reallocations so far.
pub fn allocations() -> usize {
    ALLOCS.load(Ordering::SeqCst)
}

/// `f`'s result and the heap bytes it left allocated.
pub fn kept<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    let out = f();
    (out, LIVE.load(Ordering::SeqCst) - before)
}

/// The most heap bytes `f` had allocated at once, over what was live before it.
pub fn peak_growth(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - before
}
