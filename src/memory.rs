//! Keeps the allocator from holding memory the operator no longer uses.
//!
//! With glibc's malloc (the build the benchmarks run), two things made the operator's RSS
//! rise refresh after refresh with 5,000 users in 10 enrollments while the heap in use
//! stayed at 13-17 MB (BENCHMARKS.md section 3):
//!
//! - glibc serves a large allocation (a multi-megabyte IAM response body) by a mapping of
//!   its own, returned on free, but each such free raises the size from which it does so
//!   (up to 32 MiB). From the second refresh on, those bodies land inside an arena, the
//!   small allocations made meanwhile (the new inventory) pin the pages around them, and
//!   the arena grows. [`tune`] fixes the threshold at [`MMAP_THRESHOLD`].
//! - Memory freed after a burst (a refresh and the reconciles that follow it) stays
//!   resident in the arena of the thread that allocated it: 26 MB free next to 17 MB in
//!   use. `malloc_trim(0)` returns every whole free page of every arena; it runs once work
//!   has gone quiet (no reconcile finished for [`QUIET`]) after some finished: an idle
//!   operator never calls it, a busy one at most every [`QUIET`].
//!
//! Other allocators (the shipped image is a static musl build) return free pages by
//! themselves: there both do nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

/// Allocations from this size on get a mapping of their own, returned to the system on free.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Fixes the allocator's mmap threshold (glibc only); call once at start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    /// `M_MMAP_THRESHOLD` of glibc's `<malloc.h>`.
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: mallopt takes no pointer and may be called at any time; setting this
    // parameter also turns off glibc's dynamic adjustment of it.
    let set = unsafe { mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD as std::ffi::c_int) };
    if set != 1 {
        tracing::warn!("cannot set the allocator's mmap threshold");
    }
}

/// Fixes the allocator's mmap threshold (glibc only); call once at start.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// How long no reconcile must have finished before the free memory is returned.
pub const QUIET: Duration = Duration::from_secs(5);

/// Runs forever: returns free memory to the system after each burst of reconciles.
pub async fn trim_after_bursts(metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(QUIET);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bursts = Bursts::new(metrics.reconciles());
    loop {
        ticks.tick().await;
        if bursts.ended(metrics.reconciles()) {
            let started = std::time::Instant::now();
            trim();
            tracing::debug!(took = ?started.elapsed(), "returned the allocator's free memory to the system");
        }
    }
}

/// Tells from the count of finished reconciles, read every [`QUIET`], when a burst ended.
struct Bursts {
    seen: u64,
    trimmed: u64,
}

impl Bursts {
    fn new(finished: u64) -> Self {
        Self { seen: finished, trimmed: finished }
    }

    /// Whether a burst just ended: none finished since the last look, some since the
    /// last trim.
    fn ended(&mut self, finished: u64) -> bool {
        let ended = finished == self.seen && finished != self.trimmed;
        if ended {
            self.trimmed = finished;
        }
        self.seen = finished;
        ended
    }
}

/// Returns the allocator's free pages to the system (glibc only).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim takes no pointer, locks each arena itself and may be
    // called from any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

/// Returns the allocator's free pages to the system (glibc only).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_leaves_live_memory_alone() {
        tune();
        let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        let freed: Vec<Vec<u8>> = (0..64).map(|_| vec![0; 64 * 1024]).collect();
        drop(freed);
        trim();
        assert!(kept.iter().enumerate().all(|(i, v)| v.iter().all(|b| *b == i as u8)));
    }

    #[test]
    fn a_trim_once_each_burst_has_ended_and_none_while_idle() {
        let mut bursts = Bursts::new(3);
        // Idle, then a burst of reconciles over three looks, then quiet.
        let looks = [3, 3, 5, 9, 10, 10, 10, 11, 11, 11];
        let trims: Vec<bool> = looks.iter().map(|&n| bursts.ended(n)).collect();
        assert_eq!(trims, [false, false, false, false, false, true, false, false, true, false]);
    }
}
