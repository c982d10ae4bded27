//! Threads and their scratch buffers.

use std::sync::{Mutex, PoisonError};

/// The threads a kernel may use and the scratch buffers they reuse from call to call.
///
/// Kernels split their output into blocks of rows whose size never depends on the thread count
/// and hand them out one at a time; each block is computed whole by one thread. The result is
/// the same bits for any thread count.
///
/// The `threads − 1` helper threads are started once, when the `Workers` is made, and wait
/// between calls: a network calls its kernels ~50 times per image batch, and starting threads
/// per call cost both the spawn and the helpers' thread-local buffers (freshly mapped, page
/// faults) every time.
#[derive(Debug)]
pub struct Workers {
    threads: usize,
    /// The helper threads; `None` for one thread, or if the system refused to start them (then
    /// each call starts scoped threads).
    helpers: Option<rayon_core::ThreadPool>,
    /// Scratch buffers (gathered convolution rows), taken by a thread for one call and returned.
    scratch: Mutex<Vec<Vec<f32>>>,
}

impl Workers {
    /// `threads` workers (at least 1), the calling thread included.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let helpers = (threads > 1)
            .then(|| {
                rayon_core::ThreadPoolBuilder::new()
                    .num_threads(threads - 1)
                    .thread_name(|i| format!("rpn-kernels-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
        Self { threads, helpers, scratch: Mutex::new(Vec::new()) }
    }

    /// As many workers as the machine has cores (`std::thread::available_parallelism`).
    pub fn all_cores() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A scratch buffer from the pool (empty if none is free); give it back with
    /// [`Workers::return_scratch`] so that later calls reuse its memory.
    pub(crate) fn take_scratch(&self) -> Vec<f32> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
    }

    pub(crate) fn return_scratch(&self, buffer: Vec<f32>) {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner).push(buffer);
    }

    /// Calls `job(first_row, block, scratch)` for every block of `rows_per_block` rows of `out`
    /// (rows of `row_len` values; the last block may be shorter), spread over the threads.
    pub(crate) fn for_each_block<F>(
        &self,
        out: &mut [f32],
        row_len: usize,
        rows_per_block: usize,
        job: F,
    ) where
        F: Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
    {
        let rows_per_block = rows_per_block.max(1);
        let block_len = (rows_per_block * row_len).max(1);
        let tasks: Vec<_> = out
            .chunks_mut(block_len)
            .enumerate()
            .map(|(index, block)| (index * rows_per_block, block))
            .collect();
        self.for_each_task(tasks, |(first_row, block), scratch| job(first_row, block, scratch));
    }

    /// Calls `job(task, scratch)` for every task, spread over the threads, each task whole on
    /// one thread (tasks carry their own disjoint output slices).
    pub(crate) fn for_each_task<T, F>(&self, tasks: Vec<T>, job: F)
    where
        T: Send,
        F: Fn(T, &mut Vec<f32>) + Sync,
    {
        let helpers = self.threads.min(tasks.len()).saturating_sub(1);
        let queue = Mutex::new(tasks.into_iter());
        let work = || {
            let mut scratch = self.take_scratch();
            loop {
                // The lock is held only to take the next task.
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some(task) = next else { break };
                job(task, &mut scratch);
            }
            self.return_scratch(scratch);
        };
        if helpers == 0 {
            work();
            return;
        }
        match &self.helpers {
            // The calling thread works too; the scope returns when the helpers are done.
            Some(pool) => pool.in_place_scope(|scope| {
                for _ in 0..helpers {
                    scope.spawn(|_| work());
                }
                work();
            }),
            None => std::thread::scope(|scope| {
                for _ in 0..helpers {
                    scope.spawn(work);
                }
                work();
            }),
        }
    }
}

/// The block count of a kernel's work is rounded up to a multiple of this (when there are that
/// many units), so that small layers still have a block per core on 2 cores and the blocks
/// share out evenly. Not more: for seed 000's Winograd head every block streams all the
/// transformed weights (16 MiB, 128 tiles in all), and 4 blocks of it measured 14–16 ms where
/// 2 took 11–13.
const BLOCK_MULTIPLE: usize = 2;

/// Units per block when `total` units of work are cut into blocks of about `target` units,
/// each a whole number of `granule` units: a multiple of [`BLOCK_MULTIPLE`] blocks of about
/// equal size (the last may be shorter) where there are that many granules. Independent of the
/// thread count, like the blocks themselves.
pub(crate) fn block_size(total: usize, target: usize, granule: usize) -> usize {
    let granule = granule.max(1);
    let count = total
        .div_ceil(target.max(1))
        .next_multiple_of(BLOCK_MULTIPLE)
        .min(total.div_ceil(granule))
        .max(1);
    total.div_ceil(count).next_multiple_of(granule).max(1)
}

/// The first `len` values of `scratch`, growing it if it is shorter (contents unspecified: the
/// caller overwrites them). The buffer never shrinks, so that a buffer reused for blocks of
/// varying sizes is zero-filled once, when it first grows, not on every call (`Vec::resize`
/// after a shorter use fills again: 2–3 % of seed 000's forward went to `memset`).
pub(crate) fn scratch_slice(scratch: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    &mut scratch[..len]
}

impl Default for Workers {
    fn default() -> Self {
        Self::all_cores()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks are whole granules, cover the work, and come in an even count of about equal
    /// sizes: seed 000's 512-row 1×1 layers cut into 6 blocks rather than 5 of 96 rows and one
    /// of 32.
    #[test]
    fn block_sizes_share_out_evenly() {
        assert_eq!(block_size(512, 96, 6), 90);
        assert_eq!(block_size(2048, 96, 6), 96);
        assert_eq!(block_size(32, 16, 1), 16);
        assert_eq!(block_size(5, 96, 6), 6);
        assert!(block_size(0, 96, 6) >= 1, "no work still makes a valid block size");
        for (total, target, granule) in [(1, 1, 1), (7, 2, 3), (100, 96, 6), (8193, 96, 6)] {
            let size = block_size(total, target, granule);
            let count = total.div_ceil(size);
            assert_eq!(size % granule, 0, "{total} {target} {granule}");
            assert!(count <= total.div_ceil(target).next_multiple_of(2), "{total} {target}");
        }
    }

    /// Every row is visited once, with its own index, whatever the thread count.
    #[test]
    fn every_block_once_with_its_first_row() {
        for threads in [1, 2, 5] {
            let mut out = vec![0f32; 3 * 10];
            Workers::new(threads).for_each_block(&mut out, 3, 4, |first, block, _| {
                for (r, row) in block.chunks_mut(3).enumerate() {
                    row.fill((first + r) as f32 + row[0] + 1.0);
                }
            });
            let rows: Vec<f32> = out.chunks(3).map(|r| r[0]).collect();
            assert_eq!(rows, (1..=10).map(|r| r as f32).collect::<Vec<_>>(), "{threads} threads");
        }
    }
}
