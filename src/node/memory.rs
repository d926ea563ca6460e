//! Giving freed heap back to the system while the node is idle.
//!
//! A node that has worked through a long job frees most of what the job
//! used, but glibc's allocator keeps freed pages in its arenas (one per
//! thread that allocated, and tokio has many) unless they sit at an arena's
//! top: measured 5 s after a 10,000-task job on 3 nodes, 72-83 MiB
//! resident, where the same node restarted on its data holds 29 MiB. On
//! someone's workstation that is memory taken from their own work.
//! `malloc_trim` returns the free pages of every arena (66-71 MiB after it
//! in that run). It costs a walk of the free lists (a millisecond or so
//! here), so it runs once a minute, only when no render is under way, and
//! only on glibc; other allocators and platforms are left as they are.

use std::sync::Arc;
use std::time::Duration;

use super::{Inner, lock};

/// How often an idle node gives back freed heap.
const EVERY: Duration = Duration::from_secs(60);

/// Until shutdown: every [`EVERY`], if nothing renders here, give back
/// the heap the allocator holds free.
pub(crate) async fn give_back_when_idle(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if !lock(&inner.running).is_empty() {
            continue;
        }
        let _ = tokio::task::spawn_blocking(give_back_free_heap).await;
    }
}

/// Return the allocator's free pages to the system; true if any went back.
pub(crate) fn give_back_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks and releases the allocator's own
        // free lists under its locks; it takes no pointers from us.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Freed memory that the allocator kept goes back: many small blocks
    /// allocated and freed leave the process's resident size higher than
    /// after the trim. Other tests allocate in this process at the same
    /// time, so the drop is asked of one of three tries, not of each.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_small_blocks_go_back_to_the_system() {
        fn resident_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            // ~80 MiB of small blocks (from the heap, not mmap), with every
            // thousandth kept so that what is freed is not at the top of
            // the heap, where free would give it back by itself.
            let mut blocks: Vec<Vec<u8>> = (0..400_000).map(|i| vec![i as u8; 200]).collect();
            let keepers: Vec<Vec<u8>> = blocks.iter().step_by(1000).cloned().collect();
            blocks.clear();
            blocks.shrink_to_fit();
            let before = resident_kib();
            let gave = give_back_free_heap();
            let after = resident_kib();
            drop(keepers);
            if gave && after + 40_000 < before {
                return;
            }
            seen.push((gave, before, after));
        }
        panic!("(given back, KiB before, KiB after) of three tries: {seen:?}");
    }
}
