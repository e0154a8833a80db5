//! A fixed pool of threads for work that may wait on the network. Kernel
//! requests that cannot be answered from memory are handed to it with their
//! reply, so the threads that read requests from the kernel are always free
//! for lookups, attributes and cached reads.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub struct Workers {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

impl Workers {
    /// `threads` threads named `<name>-<i>`.
    pub fn new(name: &str, threads: usize) -> Arc<Workers> {
        let workers = Arc::new(Workers {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let pool = workers.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || pool.work())
                .expect("spawning a worker thread");
        }
        workers
    }

    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        self.queue.lock().push_back(Box::new(job));
        self.ready.notify_one();
    }

    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock();
                loop {
                    if let Some(job) = queue.pop_front() {
                        break job;
                    }
                    self.ready.wait(&mut queue);
                }
            };
            // A panicking job must not take the thread (and its reply) down
            // with it unnoticed: the reply's drop answers EIO.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
        while done.load(Ordering::SeqCst) < 4 {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "the jobs ran one after the other"
        );
    }
}
