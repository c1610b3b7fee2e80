//! A counting global allocator: the Rust heap's current size and its peak.
//! The engines' own memory (DuckDB's buffers, the server) is not counted,
//! so the peak during a run is what the library itself holds. Beside it,
//! the process's resident set (Linux), which does count an embedded
//! engine's buffers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static CURRENT: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counted.
pub struct Counting;

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by as u64, Ordering::Relaxed) + by as u64;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size > layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Starts a new peak from the current size; returns that size.
pub fn reset_peak() -> u64 {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The peak since the last [`reset_peak`].
pub fn peak() -> u64 {
    PEAK.load(Ordering::Relaxed)
}

/// A field of `/proc/self/status` in bytes (its values are in kB).
fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Starts a new peak of the process's resident set from its current size
/// (writing 5 to `clear_refs` resets the peak); returns that size.
pub fn reset_resident() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status("VmRSS")
}

/// The resident set's peak since the last [`reset_resident`].
pub fn resident_peak() -> u64 {
    status("VmHWM")
}

/// What a run held: the Rust heap's peak and the resident set's peak,
/// each above its size when the run started.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    /// The Rust heap (the library).
    pub heap: u64,
    /// The resident set (the library and an embedded engine).
    pub resident: u64,
}

impl Held {
    /// The larger of each.
    pub fn max(self, o: Held) -> Held {
        Held {
            heap: self.heap.max(o.heap),
            resident: self.resident.max(o.resident),
        }
    }
}
