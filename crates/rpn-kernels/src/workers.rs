//! Threads and their scratch buffers.

use std::sync::{Mutex, PoisonError};

/// The threads a kernel may use and the scratch buffers they reuse from call to call.
///
/// Kernels split their output into blocks of rows whose size never depends on the thread count
/// and hand them out one at a time; each block is computed whole by one thread. The result is
/// the same bits for any thread count.
#[derive(Debug)]
pub struct Workers {
    threads: usize,
    /// Scratch buffers (gathered convolution rows), taken by a thread for one call and returned.
    scratch: Mutex<Vec<Vec<f32>>>,
}

impl Workers {
    /// `threads` workers (at least 1), the calling thread included.
    pub fn new(threads: usize) -> Self {
        Self { threads: threads.max(1), scratch: Mutex::new(Vec::new()) }
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
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(work);
            }
            work();
        });
    }
}

impl Default for Workers {
    fn default() -> Self {
        Self::all_cores()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
