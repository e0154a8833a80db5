//! Pools of threads for work that may wait on the network. Kernel requests
//! that cannot be answered from memory, beyond those the threads that read
//! them may wait on themselves, are handed to one with their reply, so those
//! threads always keep some free for lookups, attributes and cached reads.
//!
//! A pool starts empty and grows only while every thread is busy, up to its
//! bound; a thread idle for a while ends. A walk that waits on one request
//! at a time is served by one warm thread, not by dozens touching their own
//! stacks and allocator arenas.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle thread waits for work before it ends.
const IDLE_LIFETIME: Duration = Duration::from_secs(30);

pub struct Workers {
    name: String,
    max_threads: usize,
    /// The CPUs the pool's threads may run on: those of the thread that
    /// made the pool. A thread inherits the affinity of the one that starts
    /// it, and the threads handing jobs over may be pinned to one CPU (the
    /// io_uring queues'), which would put every download there.
    cpus: Option<CpuSet>,
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    /// Each job, with when it was asked for.
    queue: VecDeque<(Instant, Job)>,
    threads: usize,
    idle: usize,
}

impl Workers {
    /// A pool of at most `max_threads` threads named `<name>-<i>`.
    pub fn new(name: &str, max_threads: usize) -> Arc<Workers> {
        Arc::new(Workers {
            name: name.into(),
            max_threads: max_threads.max(1),
            cpus: sched_getaffinity(None).ok(),
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
        })
    }

    /// The most threads the pool runs at once.
    pub fn max_threads(&self) -> usize {
        self.max_threads
    }

    pub fn spawn(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let mut state = self.state.lock();
        state.queue.push_back((Instant::now(), Box::new(job)));
        if state.idle > state.queue.len() - 1 {
            drop(state);
            self.ready.notify_one();
            return;
        }
        if state.threads < self.max_threads {
            state.threads += 1;
            let number = state.threads;
            drop(state);
            let pool = self.clone();
            let started = std::thread::Builder::new()
                .name(format!("{}-{number}", self.name))
                .spawn(move || pool.work());
            if let Err(e) = started {
                // The queued job waits for a thread that is already running.
                tracing::warn!("cannot start a {} thread: {e}", self.name);
                self.state.lock().threads -= 1;
            }
        }
    }

    fn work(&self) {
        if let Some(cpus) = &self.cpus {
            let _ = sched_setaffinity(None, cpus);
        }
        loop {
            let (asked, job) = {
                let mut state = self.state.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break job;
                    }
                    state.idle += 1;
                    let timed_out = self.ready.wait_for(&mut state, IDLE_LIFETIME).timed_out();
                    state.idle -= 1;
                    if timed_out && state.queue.is_empty() {
                        state.threads -= 1;
                        return;
                    }
                }
            };
            // A panicking job must not take the thread (and its reply) down
            // with it unnoticed: the reply's drop answers EIO.
            // Its requests to the server know how long it waited for a thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::wait::asked_at(asked, job)
            }));
        }
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.state.lock().threads
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.state.lock().idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn wait_for(done: &AtomicUsize, n: usize) {
        while done.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn runs_jobs_in_parallel_and_survives_a_panic() {
        let workers = Workers::new("test", 4);
        let done = Arc::new(AtomicUsize::new(0));
        workers.spawn(|| panic!("a failing job"));
        let started = std::time::Instant::now();
        for _ in 0..4 {
            let done = done.clone();
            workers.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        wait_for(&done, 4);
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "the jobs ran one after the other"
        );
        assert!(workers.threads() <= 4);
    }

    #[test]
    fn one_job_at_a_time_needs_one_thread() {
        let workers = Workers::new("test", 16);
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..50 {
            let counter = done.clone();
            workers.spawn(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            wait_for(&done, i + 1);
            while workers.idle() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(workers.threads(), 1);
    }

    #[test]
    fn more_jobs_than_threads_all_run() {
        let workers = Workers::new("test", 2);
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let done = done.clone();
            workers.spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        wait_for(&done, 20);
        assert_eq!(workers.threads(), 2);
    }
}
