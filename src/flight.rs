//! Coordination of concurrent callers that want the same work done:
//! [`SingleFlight`] runs one computation per key at a time and hands its
//! result to everyone who asked meanwhile; [`Gate`] runs a check once per
//! mount session or period (again after a pause if it could not complete,
//! and at once when re-armed).

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

/// The last check a [`Gate`] ran.
#[derive(Clone, Copy)]
struct Finished {
    /// Its number: checks are numbered in the order they begin.
    number: u64,
    at: Instant,
    completed: bool,
}

#[derive(Default)]
struct GateState {
    /// Checks begun so far (the next one's number).
    begun: u64,
    /// A check numbered below this no longer counts ([`Gate::rearm`]).
    wanted: u64,
    last: Option<Finished>,
}

/// When a [`Gate`] runs its check again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// After a check that could not complete (say, the network was down).
    pub retry_after: Duration,
    /// After a check that completed: `None` never (once per session).
    pub period: Option<Duration>,
}

impl Schedule {
    pub fn once(retry_after: Duration) -> Self {
        Schedule {
            retry_after,
            period: None,
        }
    }
}

/// A check that runs once per session, or once per period. Callers
/// arriving while it runs wait for it. A check that could not complete runs
/// again when asked after `retry_after`; until then callers go on at once.
/// [`Gate::rearm`] makes the next caller run it again, as if the session
/// had just begun.
pub struct Gate {
    state: Mutex<GateState>,
    flight: SingleFlight<(), ()>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Mutex::new(GateState::default()),
            flight: SingleFlight::default(),
        }
    }
}

impl Gate {
    fn needs_run(&self, schedule: Schedule) -> bool {
        let state = self.state.lock();
        match state.last {
            None => true,
            Some(last) if last.number < state.wanted => true,
            Some(last) if !last.completed => last.at.elapsed() >= schedule.retry_after,
            Some(last) => schedule.period.is_some_and(|p| last.at.elapsed() >= p),
        }
    }

    /// Runs `check` if it has not passed yet this session (or this
    /// period); `check` is told whether it passed before (a check run
    /// again), and returns whether it completed.
    pub fn pass(&self, schedule: Schedule, check: impl FnOnce(bool) -> bool) {
        if !self.needs_run(schedule) {
            return;
        }
        self.flight.run(&(), || {
            // Another caller may have completed the check just before us.
            if !self.needs_run(schedule) {
                return;
            }
            let (number, again) = {
                let mut state = self.state.lock();
                state.begun += 1;
                (state.begun - 1, state.last.is_some_and(|l| l.completed))
            };
            let completed = check(again);
            self.state.lock().last = Some(Finished {
                number,
                at: Instant::now(),
                completed,
            });
        });
    }

    /// Runs `check` now, as if the session had just begun: a check that
    /// began before this call does not count, so it is waited for and run
    /// again; one that began since is shared. Returns whether the check
    /// that counts completed.
    pub fn pass_again(&self, schedule: Schedule, check: impl FnMut(bool) -> bool) -> bool {
        self.pass_since(self.ticket(), schedule, check)
    }

    /// The number of the next check to begin: [`Gate::pass_since`] with it
    /// counts only checks that begin from now on.
    pub fn ticket(&self) -> u64 {
        self.state.lock().begun
    }

    /// [`Gate::pass_again`], counting every check that began since
    /// `ticket` was taken.
    pub fn pass_since(
        &self,
        ticket: u64,
        schedule: Schedule,
        mut check: impl FnMut(bool) -> bool,
    ) -> bool {
        {
            let mut state = self.state.lock();
            state.wanted = state.wanted.max(ticket);
        }
        loop {
            self.pass(schedule, &mut check);
            let state = self.state.lock();
            match state.last {
                Some(last) if last.number >= ticket => return last.completed,
                // A check older than the ticket ended (or none ran): again.
                _ => {}
            }
        }
    }

    /// The next caller runs the check again, as at a session's start; a
    /// check running now does not count.
    pub fn rearm(&self) {
        let mut state = self.state.lock();
        state.wanted = state.begun;
    }

    /// True when [`Gate::pass`] would return at once, without running.
    pub fn is_settled(&self, schedule: Schedule) -> bool {
        !self.needs_run(schedule)
    }

    /// Records that the check's work was done another way (e.g. a first
    /// download, which is as fresh as a revalidation).
    pub fn mark_passed(&self) {
        let mut state = self.state.lock();
        state.begun += 1;
        state.last = Some(Finished {
            number: state.begun - 1,
            at: Instant::now(),
            completed: true,
        });
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

    /// Every gate's [`Gate::ticket`], by key.
    pub fn tickets(&self) -> HashMap<K, u64> {
        self.gates
            .lock()
            .iter()
            .map(|(key, gate)| (key.clone(), gate.ticket()))
            .collect()
    }

    /// Re-arms every gate (see [`Gate::rearm`]).
    pub fn rearm_all(&self) {
        for gate in self.gates.lock().values() {
            gate.rearm();
        }
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
                gate.pass(Schedule::once(Duration::ZERO), |_| {
                    released.recv().unwrap();
                    runs.fetch_add(1, Ordering::SeqCst);
                    true
                })
            });
            until_shared_by(&gate.flight, &(), 1);
            let others: Vec<_> = (0..7)
                .map(|_| {
                    s.spawn(move || {
                        gate.pass(Schedule::once(Duration::ZERO), |_| panic!("ran twice"));
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
        gate.pass(Schedule::once(Duration::ZERO), |_| panic!("already passed"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        let failing = Gate::default();
        failing.pass(Schedule::once(Duration::from_secs(3600)), |_| false);
        failing.pass(Schedule::once(Duration::from_secs(3600)), |_| {
            panic!("must wait before retrying")
        });
        let retried = AtomicUsize::new(0);
        failing.pass(Schedule::once(Duration::ZERO), |_| {
            retried.fetch_add(1, Ordering::SeqCst);
            true
        });
        assert_eq!(retried.load(Ordering::SeqCst), 1);

        let marked = Gate::default();
        marked.mark_passed();
        marked.pass(Schedule::once(Duration::ZERO), |_| {
            panic!("marked as passed")
        });
    }

    #[test]
    fn a_period_runs_the_check_again_once_it_has_passed() {
        let gate = Gate::default();
        let every = |period| Schedule {
            retry_after: Duration::from_secs(3600),
            period: Some(period),
        };
        let mut seen = Vec::new();
        gate.pass(every(Duration::from_secs(3600)), |again| {
            seen.push(again);
            true
        });
        gate.pass(every(Duration::from_secs(3600)), |_| {
            panic!("within the period")
        });
        gate.pass(every(Duration::ZERO), |again| {
            seen.push(again);
            true
        });
        assert_eq!(seen, [false, true], "the second run knows it is one");
        assert!(gate.is_settled(every(Duration::from_secs(3600))));
        assert!(!gate.is_settled(every(Duration::ZERO)));
    }

    #[test]
    fn a_check_run_again_never_counts_one_that_began_before() {
        let gate = Gate::default();
        let runs = AtomicUsize::new(0);
        let (release, released) = mpsc::channel::<()>();
        let schedule = Schedule::once(Duration::from_secs(3600));
        std::thread::scope(|s| {
            let (gate, runs) = (&gate, &runs);
            // A first check under way...
            let first = s.spawn(move || {
                gate.pass(schedule, |_| {
                    released.recv().unwrap();
                    runs.fetch_add(1, Ordering::SeqCst);
                    true
                })
            });
            until_shared_by(&gate.flight, &(), 1);
            // ...when one is asked for anew: it waits for the first, then runs.
            let again = s.spawn(move || {
                gate.pass_again(schedule, |again| {
                    assert!(again);
                    runs.fetch_add(1, Ordering::SeqCst);
                    true
                })
            });
            until_shared_by(&gate.flight, &(), 2);
            release.send(()).unwrap();
            first.join().unwrap();
            assert!(again.join().unwrap());
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Re-armed, the next caller runs it; a failure is said.
        gate.rearm();
        let rerun = AtomicUsize::new(0);
        gate.pass(schedule, |_| {
            rerun.fetch_add(1, Ordering::SeqCst);
            true
        });
        assert_eq!(rerun.load(Ordering::SeqCst), 1);
        assert!(!gate.pass_again(schedule, |_| false));
        gate.pass(schedule, |_| panic!("failed within retry_after"));
        // A check that began after a ticket was taken counts for it.
        let ticket = gate.ticket();
        gate.rearm();
        gate.pass(schedule, |_| true);
        assert!(gate.pass_since(ticket, schedule, |_| panic!("began after the ticket")));
    }
}
