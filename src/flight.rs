//! Coordination of concurrent callers that want the same work done:
//! [`SingleFlight`] runs one computation per key at a time and hands its
//! result to everyone who asked meanwhile; [`Gate`] runs a check once per
//! mount session (again after a pause if it could not complete).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

enum SlotState<V> {
    Running,
    Done(V),
    /// The leader panicked: a waiter takes over.
    Abandoned,
}

struct Slot<V> {
    state: Mutex<SlotState<V>>,
    changed: Condvar,
}

pub struct SingleFlight<K, V> {
    inflight: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// Runs `work` unless a call for `key` is already running, in which case
    /// it waits for that call and returns its result.
    pub fn run(&self, key: &K, work: impl FnOnce() -> V) -> V {
        let mut work = Some(work);
        loop {
            let (slot, leader) = {
                let mut map = self.inflight.lock();
                match map.get(key) {
                    Some(slot) => (slot.clone(), false),
                    None => {
                        let slot = Arc::new(Slot {
                            state: Mutex::new(SlotState::Running),
                            changed: Condvar::new(),
                        });
                        map.insert(key.clone(), slot.clone());
                        (slot, true)
                    }
                }
            };
            if leader {
                let mut guard = LeaderGuard {
                    flight: self,
                    key,
                    slot: &slot,
                    finished: false,
                };
                let value = (work.take().expect("a leader runs the work once"))();
                *slot.state.lock() = SlotState::Done(value.clone());
                guard.finished = true;
                return value;
            }
            let mut state = slot.state.lock();
            loop {
                match &*state {
                    SlotState::Running => slot.changed.wait(&mut state),
                    SlotState::Done(value) => return value.clone(),
                    SlotState::Abandoned => break,
                }
            }
        }
    }
}

/// Removes the slot when the leader leaves, normally or by panic, and wakes
/// the waiters.
struct LeaderGuard<'a, K: Eq + Hash + Clone, V: Clone> {
    flight: &'a SingleFlight<K, V>,
    key: &'a K,
    slot: &'a Arc<Slot<V>>,
    finished: bool,
}

impl<K: Eq + Hash + Clone, V: Clone> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        if !self.finished {
            *self.slot.state.lock() = SlotState::Abandoned;
        }
        let mut map = self.flight.inflight.lock();
        if map.get(self.key).is_some_and(|s| Arc::ptr_eq(s, self.slot)) {
            map.remove(self.key);
        }
        drop(map);
        self.slot.changed.notify_all();
    }
}

#[derive(Clone, Copy)]
enum GateState {
    NotRun,
    Passed,
    Failed(Instant),
}

/// A check that runs once per session. Callers arriving while it runs wait
/// for it. A check that could not complete (say, the network was down) runs
/// again when asked after `retry_after`; until then callers go on at once.
pub struct Gate {
    state: Mutex<GateState>,
    flight: SingleFlight<(), ()>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Mutex::new(GateState::NotRun),
            flight: SingleFlight::default(),
        }
    }
}

impl Gate {
    fn needs_run(&self, retry_after: Duration) -> bool {
        match *self.state.lock() {
            GateState::NotRun => true,
            GateState::Passed => false,
            GateState::Failed(at) => at.elapsed() >= retry_after,
        }
    }

    /// Runs `check` if it has not passed yet this session; `check` returns
    /// whether it completed.
    pub fn pass(&self, retry_after: Duration, check: impl FnOnce() -> bool) {
        if !self.needs_run(retry_after) {
            return;
        }
        self.flight.run(&(), || {
            // Another caller may have completed the check just before us.
            if !self.needs_run(retry_after) {
                return;
            }
            let completed = check();
            *self.state.lock() = if completed {
                GateState::Passed
            } else {
                GateState::Failed(Instant::now())
            };
        });
    }

    /// True when [`Gate::pass`] would return at once, without running.
    pub fn is_settled(&self, retry_after: Duration) -> bool {
        !self.needs_run(retry_after)
    }

    /// Records that the check's work was done another way (e.g. a first
    /// download, which is as fresh as a revalidation).
    pub fn mark_passed(&self) {
        *self.state.lock() = GateState::Passed;
    }
}

/// One [`Gate`] per key, created on first use.
pub struct Gates<K> {
    gates: Mutex<HashMap<K, Arc<Gate>>>,
}

impl<K: Eq + Hash + Clone> Default for Gates<K> {
    fn default() -> Self {
        Gates {
            gates: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Gates<K> {
    pub fn get(&self, key: &K) -> Arc<Gate> {
        self.gates.lock().entry(key.clone()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// Holders of the slot for `key`: the map, the leader, and one per
    /// caller that found the run under way.
    fn holders<K: Eq + Hash + Clone, V: Clone>(flight: &SingleFlight<K, V>, key: &K) -> usize {
        flight
            .inflight
            .lock()
            .get(key)
            .map_or(0, |slot| Arc::strong_count(slot) - 1)
    }

    /// Waits (at most 10 s) until `n` callers share the run for `key`.
    fn until_shared_by<K: Eq + Hash + Clone, V: Clone>(
        flight: &SingleFlight<K, V>,
        key: &K,
        n: usize,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while holders(flight, key) < n {
            assert!(Instant::now() < deadline, "{n} callers never joined");
            std::thread::yield_now();
        }
    }

    #[test]
    fn concurrent_callers_share_one_run() {
        let flight: SingleFlight<&str, usize> = SingleFlight::default();
        let runs = AtomicUsize::new(0);
        let (release, released) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (flight, runs) = (&flight, &runs);
            let leader = s.spawn(move || {
                flight.run(&"k", || {
                    // Finishes only once every other caller waits for it.
                    released.recv().unwrap();
                    runs.fetch_add(1, Ordering::SeqCst) + 41
                })
            });
            until_shared_by(flight, &"k", 1);
            let waiters: Vec<_> = (0..15)
                .map(|_| s.spawn(|| flight.run(&"k", || panic!("a second run"))))
                .collect();
            until_shared_by(flight, &"k", 16);
            release.send(()).unwrap();
            assert_eq!(leader.join().unwrap(), 41);
            for waiter in waiters {
                assert_eq!(waiter.join().unwrap(), 41);
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once finished, the next call runs again.
        assert_eq!(flight.run(&"k", || 7), 7);
    }

    #[test]
    fn a_panicking_leader_hands_over_to_a_waiter() {
        let flight: Arc<SingleFlight<u8, u8>> = Arc::default();
        let (fail, failing) = mpsc::channel::<()>();
        let leader = {
            let flight = flight.clone();
            std::thread::spawn(move || {
                flight.run(&1, || {
                    failing.recv().unwrap();
                    panic!("leader fails")
                })
            })
        };
        until_shared_by(&flight, &1, 1);
        let waiter = {
            let flight = flight.clone();
            std::thread::spawn(move || flight.run(&1, || 5))
        };
        // The waiter found the leader's run: it can only get 5 by taking
        // the work over when the leader fails.
        until_shared_by(&flight, &1, 2);
        fail.send(()).unwrap();
        assert!(leader.join().is_err());
        assert_eq!(waiter.join().unwrap(), 5);
        assert_eq!(holders(&flight, &1), 0, "the slot is gone");
    }

    #[test]
    fn gate_runs_once_and_retries_only_after_a_failure_and_a_pause() {
        let gate = Gate::default();
        let runs = AtomicUsize::new(0);
        let (release, released) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let (gate, runs) = (&gate, &runs);
            let first = s.spawn(move || {
                gate.pass(Duration::ZERO, || {
                    released.recv().unwrap();
                    runs.fetch_add(1, Ordering::SeqCst);
                    true
                })
            });
            until_shared_by(&gate.flight, &(), 1);
            let others: Vec<_> = (0..7)
                .map(|_| {
                    s.spawn(move || {
                        gate.pass(Duration::ZERO, || panic!("ran twice"));
                        // Callers that arrived meanwhile waited for it.
                        assert_eq!(runs.load(Ordering::SeqCst), 1);
                    })
                })
                .collect();
            until_shared_by(&gate.flight, &(), 8);
            release.send(()).unwrap();
            first.join().unwrap();
            for other in others {
                other.join().unwrap();
            }
        });
        gate.pass(Duration::ZERO, || panic!("already passed"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        let failing = Gate::default();
        failing.pass(Duration::from_secs(3600), || false);
        failing.pass(Duration::from_secs(3600), || {
            panic!("must wait before retrying")
        });
        let retried = AtomicUsize::new(0);
        failing.pass(Duration::ZERO, || {
            retried.fetch_add(1, Ordering::SeqCst);
            true
        });
        assert_eq!(retried.load(Ordering::SeqCst), 1);

        let marked = Gate::default();
        marked.mark_passed();
        marked.pass(Duration::ZERO, || panic!("marked as passed"));
    }
}
