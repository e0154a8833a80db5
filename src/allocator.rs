//! Memory the C allocator keeps after a burst, given back to the system.
//!
//! glibc keeps freed memory in its arenas (one per thread that allocated,
//! up to eight per core), and raises its threshold for allocating large
//! buffers from them each time one is freed: after a burst of large reads
//! (many readers waiting on the server at once, their answers allocated
//! and freed together) a mount would hold several times its usual memory
//! for as long as it lives. A thread of its own looks every
//! [`CHECK_EVERY`] at how much the arenas hold free, and past
//! [`KEEP_FREE`] asks glibc to give the free pages back (`malloc_trim`,
//! which returns whole free pages inside every arena; the free top of a
//! thread's arena it leaves, to be trimmed as that arena's own frees reach
//! it).

use std::time::Duration;

/// How often the arenas are looked at: memory returns within this long
/// after a burst, and an idle mount wakes this seldom.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Free memory the arenas may keep for the next requests.
const KEEP_FREE: usize = 8 << 20;

/// Starts the thread that gives the arenas' free memory back; it lives as
/// long as the process.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::thread::Builder::new()
            .name("allocator".into())
            .spawn(|| {
                let mut last = None;
                loop {
                    std::thread::sleep(CHECK_EVERY);
                    let now = Heap::now();
                    if worth_trimming(now, last, KEEP_FREE) {
                        // SAFETY: glibc's own call, safe from any thread; 0
                        // keeps no padding at the top of the main heap.
                        unsafe { libc::malloc_trim(0) };
                        tracing::debug!(
                            free_mib = now.free >> 20,
                            in_use_mib = now.in_use >> 20,
                            "gave the allocator's free memory back"
                        );
                        last = Some(Heap::now());
                    }
                }
            });
        if let Err(e) = started {
            tracing::debug!("no thread to give the allocator's free memory back: {e}");
        }
    }
}

/// What glibc's arenas hold: bytes free in them and bytes in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Heap {
    free: usize,
    in_use: usize,
}

impl Heap {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn now() -> Heap {
        // SAFETY: a plain query of glibc's allocator, safe from any thread.
        let info = unsafe { libc::mallinfo2() };
        Heap {
            free: info.fordblks,
            in_use: info.uordblks,
        }
    }
}

/// Whether to give free pages back: more than `keep` bytes are free, and
/// the heap has changed since the last time (free bytes stay counted as
/// free once their pages are given back, so an unchanged heap has nothing
/// more to give).
fn worth_trimming(now: Heap, after_last_trim: Option<Heap>, keep: usize) -> bool {
    now.free > keep && after_last_trim != Some(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_memory_is_given_back_past_the_limit_once_per_change() {
        let heap = |free, in_use| Heap { free, in_use };
        let keep = 8 << 20;
        assert!(!worth_trimming(heap(keep, 1 << 20), None, keep));
        assert!(worth_trimming(heap(keep + 1, 1 << 20), None, keep));
        // Given back already, and nothing allocated or freed since.
        let trimmed = heap(40 << 20, 3 << 20);
        assert!(!worth_trimming(trimmed, Some(trimmed), keep));
        // Allocated and freed since: new free pages may be resident.
        assert!(worth_trimming(heap(40 << 20, 4 << 20), Some(trimmed), keep));
        assert!(worth_trimming(heap(41 << 20, 3 << 20), Some(trimmed), keep));
    }
}
