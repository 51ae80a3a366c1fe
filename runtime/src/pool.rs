//! A persistent thread pool for intra-op parallelism.
//!
//! Kernels split their work into `n` independent tasks and call
//! [`ThreadPool::parallel_for`]; the calling thread works too, and the call
//! returns when every task has run. Workers spin briefly after a job (the next
//! kernel usually follows within microseconds) and then sleep on a condition
//! variable, so an idle pool costs nothing. A pool of one thread spawns no
//! worker and runs the tasks inline: one thread never pays for the pool.

use crate::kernels::KernelError;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How many times a waiting thread polls before it blocks.
const SPIN_LIMIT: u32 = 20_000;

/// The job being run: a task function whose lifetime has been erased.
///
/// Only [`ThreadPool::parallel_for`] creates one, and it does not return
/// until every worker has finished with it, so the pointee outlives all uses.
#[derive(Clone, Copy)]
struct Job {
    task: *const (dyn Fn(usize) + Sync),
    count: usize,
}

// SAFETY: the pointee is `Sync`, so sharing the pointer across threads is
// sound; its lifetime is guaranteed by `parallel_for` (see `Job`).
unsafe impl Send for Job {}

struct Shared {
    /// Bumped for every published job; workers compare it with the last one they ran.
    epoch: AtomicU64,
    job: Mutex<Option<Job>>,
    wake: Condvar,
    next_task: AtomicUsize,
    /// Workers that have not yet finished the current job.
    running: AtomicUsize,
    done_lock: Mutex<()>,
    done: Condvar,
    panicked: AtomicBool,
    shutdown: AtomicBool,
}

/// A fixed set of worker threads plus the caller.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises callers: one job at a time.
    call: Mutex<()>,
}

impl ThreadPool {
    /// A pool running jobs on `threads` threads in all (the caller and
    /// `threads - 1` workers). `threads` of 0 is treated as 1.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            next_task: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("d2nn-worker-{i}"))
                    .spawn(move || worker_loop(&shared))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool { shared, workers, call: Mutex::new(()) }
    }

    /// Threads that run a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(i)` for every `i` in `0..count`, spread over the pool's
    /// threads, and returns when all have run. A panic in a task is re-raised
    /// here after every thread has stopped using `task`. Calls from several
    /// threads run one after another; a task must not call `parallel_for` on
    /// the same pool (it would wait for itself).
    pub fn parallel_for(&self, count: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || count <= 1 {
            (0..count).for_each(task);
            return;
        }
        let _one_job_at_a_time = self.call.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        // SAFETY: only the lifetime is erased; this function waits below until
        // `running` is 0, after which no worker reads the job again.
        let task_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task as *const (dyn Fn(usize) + Sync)) };
        shared.next_task.store(0, Ordering::Relaxed);
        shared.running.store(self.workers.len(), Ordering::Relaxed);
        shared.panicked.store(false, Ordering::Relaxed);
        {
            let mut job = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            *job = Some(Job { task: task_static, count });
            shared.epoch.fetch_add(1, Ordering::Release);
        }
        shared.wake.notify_all();

        let mine = catch_unwind(AssertUnwindSafe(|| run_tasks(shared, task, count)));

        let mut spins = 0;
        while shared.running.load(Ordering::Acquire) != 0 {
            if spins < SPIN_LIMIT {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
                if shared.running.load(Ordering::Acquire) != 0 {
                    let _unused = shared.done.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if shared.panicked.load(Ordering::Relaxed) {
            panic!("a task panicked on a worker thread");
        }
    }
}

impl ThreadPool {
    /// Splits `data` into `chunk`-element pieces (the last may be shorter)
    /// and runs `task(index, piece)` for each, spread over the pool. This is
    /// how kernels write disjoint parts of one output in parallel.
    pub fn parallel_chunks_mut<T: Send>(&self, data: &mut [T], chunk: usize, task: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let chunk = chunk.max(1);
        let count = data.len().div_ceil(chunk);
        if self.workers.is_empty() || count <= 1 {
            for (i, piece) in data.chunks_mut(chunk).enumerate() {
                task(i, piece);
            }
            return;
        }
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.parallel_for(count, &|i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: `parallel_for` runs each index exactly once, so the
            // ranges `start..end` are disjoint, inside `data`, and `data` is
            // exclusively borrowed until `parallel_for` returns.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            task(i, piece);
        });
    }
}

/// A pointer handed to the tasks of one job; see [`ThreadPool::parallel_chunks_mut`].
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// Reading the pointer through a method makes closures capture the
    /// whole wrapper (which is `Sync`) rather than the raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointee is `Send`; tasks only touch disjoint ranges of it.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn run_tasks(shared: &Shared, task: &(dyn Fn(usize) + Sync), count: usize) {
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            break;
        }
        task(i);
    }
}

fn worker_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin first, then sleep.
        let mut spins = 0;
        let job = loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            if shared.epoch.load(Ordering::Acquire) != seen {
                let guard = shared.job.lock().unwrap_or_else(|e| e.into_inner());
                seen = shared.epoch.load(Ordering::Acquire);
                match *guard {
                    Some(job) => break job,
                    None => continue,
                }
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                std::hint::spin_loop();
            } else {
                let guard = shared.job.lock().unwrap_or_else(|e| e.into_inner());
                if shared.epoch.load(Ordering::Acquire) == seen && !shared.shutdown.load(Ordering::Acquire) {
                    let _unused = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
            }
        };
        // SAFETY: the publishing `parallel_for` is blocked until `running`
        // reaches 0, which this worker only signals after its last use.
        let task = unsafe { &*job.task };
        if catch_unwind(AssertUnwindSafe(|| run_tasks(shared, task, job.count))).is_err() {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        if shared.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.done.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _guard = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Output elements below which a kernel runs on the calling thread alone:
/// these kernels move a few bytes per element, and waking a worker costs
/// about as much as a few thousand elements.
pub const MIN_PARALLEL_OUTPUTS: usize = 16 * 1024;

/// Runs `kernel` on pieces of `x` and `y` spread over `pool`: the data is
/// `count` independent units of `unit.0` input and `unit.1` output elements
/// (pooling planes, softmax rows…), and each task gets whole units. Outputs
/// smaller than `min_outputs` stay on the caller. When the
/// lengths are not whole units, `kernel` runs once on everything and reports
/// the mismatch itself.
pub fn for_units(
    pool: &ThreadPool,
    min_outputs: usize,
    x: &[f32],
    y: &mut [f32],
    (unit_in, unit_out): (usize, usize),
    kernel: impl Fn(&[f32], &mut [f32]) -> Result<(), KernelError> + Sync,
) -> Result<(), KernelError> {
    let count = if unit_in > 0 && unit_out > 0 && x.len().is_multiple_of(unit_in) && y.len().is_multiple_of(unit_out) {
        x.len() / unit_in
    } else {
        0
    };
    if pool.threads() == 1 || y.len() < min_outputs.max(1) || count < 2 || y.len() / unit_out != count {
        return kernel(x, y);
    }
    // Twice as many tasks as threads, each at least half the threshold.
    let per_task = count.div_ceil(2 * pool.threads()).max((min_outputs / 2).div_ceil(unit_out)).min(count);
    let failure = std::sync::Mutex::new(None);
    pool.parallel_chunks_mut(y, per_task * unit_out, &|i, piece| {
        let first = i * per_task * unit_in;
        if let Err(e) = kernel(&x[first..first + piece.len() / unit_out * unit_in], piece) {
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    });
    failure.into_inner().unwrap_or_else(|e| e.into_inner()).map_or(Ok(()), Err)
}

/// The number of physical cores, the default thread count (logical CPUs
/// when the topology cannot be read).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Linux lists each logical CPU's core id; count distinct (package, core) pairs.
    let mut cores = std::collections::HashSet::new();
    for cpu in 0..logical {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok().map(|s| s.trim().to_string());
        match (read("physical_package_id"), read("core_id")) {
            (Some(p), Some(c)) => {
                cores.insert((p, c));
            }
            _ => return logical,
        }
    }
    cores.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once() {
        for threads in [1, 2, 3, 4] {
            let pool = ThreadPool::new(threads);
            assert_eq!(pool.threads(), threads);
            for count in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicU32> = (0..count).map(|_| AtomicU32::new(0)).collect();
                pool.parallel_for(count, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "threads {threads}, count {count}");
            }
        }
    }

    #[test]
    fn many_jobs_in_a_row_and_idle_gaps() {
        let pool = ThreadPool::new(3);
        let total = AtomicUsize::new(0);
        for round in 0..200 {
            pool.parallel_for(5, &|i| {
                total.fetch_add(i, Ordering::Relaxed);
            });
            if round % 50 == 0 {
                // Long enough for workers to stop spinning and sleep.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 200 * 10);
    }

    #[test]
    fn a_panicking_task_is_reported_to_the_caller_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.parallel_for(16, &|i| {
                if i == 9 {
                    panic!("task 9 failed");
                }
            })
        }));
        assert!(result.is_err());
        let count = AtomicUsize::new(0);
        pool.parallel_for(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn borrowed_data_is_safe_to_use() {
        let pool = ThreadPool::new(2);
        let mut out = vec![0u64; 64];
        {
            let chunks: Vec<Mutex<&mut [u64]>> = out.chunks_mut(8).map(Mutex::new).collect();
            pool.parallel_for(chunks.len(), &|i| {
                for (k, v) in chunks[i].lock().unwrap().iter_mut().enumerate() {
                    *v = (i * 8 + k) as u64;
                }
            });
        }
        assert_eq!(out, (0..64).collect::<Vec<u64>>());
    }

    #[test]
    fn chunks_are_disjoint_and_cover_the_slice() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for (len, chunk) in [(0, 4), (1, 4), (10, 3), (64, 8), (7, 100)] {
                let mut out = vec![0usize; len];
                pool.parallel_chunks_mut(&mut out, chunk, &|i, piece| {
                    for (k, v) in piece.iter_mut().enumerate() {
                        *v += i * chunk + k + 1;
                    }
                });
                assert_eq!(out, (1..=len).collect::<Vec<_>>(), "threads {threads}, len {len}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn physical_cores_is_at_least_one() {
        assert!(physical_cores() >= 1);
    }
}
