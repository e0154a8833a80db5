//! The rings: one io_uring (128-byte entries) and one thread per possible
//! CPU, each with a queue of ring entries registered on `/dev/fuse`. A
//! request answered on the ring thread is committed at once; one that
//! must wait is answered on a worker, and an open that waits for the
//! release of another version's open files is kept aside until it is
//! resumed ([`Away`]); either hands the entry back through a channel and
//! wakes the ring through an eventfd the ring reads.
//!
//! The kernel holds a CPU's requests back while its queue has no entry
//! free, so entries held by requests waiting on the server (or parked) must
//! not leave the others none: each entry sent away is replaced by a new one
//! registered at once, up to [`MAX_ENTRIES`]. An entry keeps the pages
//! its answers wrote while it is in use, and gives them back once it has
//! sat idle for [`PAGES_KEPT`]: a queue that grew through a burst of large
//! answers does not hold their memory for the life of the mount.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use io_uring::squeue::Entry128;
use io_uring::{IoUring, cqueue, opcode, types};
use rustix::event::{EventfdFlags, eventfd};
use rustix::thread::{CpuSet, sched_setaffinity};

use super::abi::{self, InHeader, OutHeader, ReqHeader};
use super::payload::Payload;
use super::{Failure, Op, Out, counted, op_name, parse, registered};
use crate::fuse::Inner;
use crate::wait;

/// The `user_data` of the eventfd read; slots are numbered from 0.
const WAKE: u64 = u64::MAX;
/// How long registration may wait for the kernel to finish `FUSE_INIT`
/// (it refuses entries with EAGAIN until then).
const REGISTER_PATIENCE: Duration = Duration::from_secs(10);
const REGISTER_RETRY: Duration = Duration::from_millis(1);
/// The most entries a queue grows to while requests wait on workers (or
/// its first depth, if more): beyond it, a CPU with that many requests
/// waiting on the server holds its others back until one is answered.
/// An entry's payload buffer takes memory only where answers were written.
const MAX_ENTRIES: usize = 1024;
/// How long an entry keeps the pages its last answer wrote: one used again
/// soon (the kernel takes the entry freed last) reuses them without page
/// faults; one left idle after a burst gives them back.
const PAGES_KEPT: Duration = Duration::from_secs(5);

/// One ring entry's buffers: the kernel writes each request into them and
/// reads the answer from them.
struct Slot {
    header: Box<ReqHeader>,
    payload: Payload,
    /// The two buffers, as `FUSE_IO_URING_CMD_REGISTER` names them.
    iov: Box<[libc::iovec; 2]>,
    /// When its last answer past the payload's first page was written:
    /// the pages it holds have been idle since.
    answered: Instant,
}

// SAFETY: `iov` points into the slot's own buffers (a box and a mapping),
// which stay where they are when the slot moves; the slot is used by one
// thread at a time (the ring's, or a worker's while the kernel waits for
// the answer).
unsafe impl Send for Slot {}

impl Slot {
    fn new(payload: usize) -> io::Result<Slot> {
        let mut header = Box::<ReqHeader>::default();
        let mut payload = Payload::new(payload)?;
        let iov = Box::new([
            libc::iovec {
                iov_base: (&raw mut *header).cast(),
                iov_len: size_of::<ReqHeader>(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        Ok(Slot {
            header,
            payload,
            iov,
            answered: Instant::now(),
        })
    }

    fn request(&self) -> (InHeader, Op) {
        let header: InHeader = abi::read(&self.header.in_out);
        let size = (self.header.ent_in_out.payload_sz as usize).min(self.payload.len());
        let op = parse(&header, &self.header.op_in, &self.payload[..size]);
        (header, op)
    }

    fn answer(&mut self, inner: &Inner, op: &Op) -> Result<usize, Failure> {
        let mut out = Out {
            buf: &mut self.payload[..],
            len: 0,
        };
        inner.answer_ring(op, &mut out).map(|()| out.len)
    }

    /// Writes the answer's header for the request `unique`.
    fn finish(&mut self, unique: u64, result: Result<usize, Failure>) {
        let (error, len) = match result {
            Ok(len) => (0, len),
            Err(Failure::Errno(errno)) => (-errno.code(), 0),
            // Only on the ring thread, which hands the request on instead;
            // a parked one is answered once resumed.
            Err(Failure::WouldBlock | Failure::Parked(_)) => (-libc::EIO, 0),
        };
        let out = OutHeader {
            len: (size_of::<OutHeader>() + len) as u32,
            error,
            unique,
        };
        self.header.in_out[..size_of::<OutHeader>()].copy_from_slice(abi::bytes(&out));
        self.header.ent_in_out.payload_sz = len as u32;
        // The clock only for the answers that may hold pages (reads),
        // not for every lookup and open.
        if self.payload.wrote(len) {
            self.answered = Instant::now();
        }
    }
}

/// One queue: its ring, its entries, and what wakes it.
struct Queue {
    qid: u16,
    ring: IoUring<Entry128, cqueue::Entry>,
    wake: Arc<OwnedFd>,
    slots: Vec<Option<Slot>>,
    /// Whether the kernel has taken each entry's registration.
    registered: Vec<bool>,
    /// Entries registered and not ended by the kernel.
    live: usize,
    /// Entries whose request is answered away from the ring: on a worker,
    /// or parked until it is resumed.
    away: usize,
    /// Entries the ring keeps for new requests beside those away: the
    /// depth the queue began with.
    ready: usize,
    /// The most entries the queue grows to.
    most: usize,
    /// Whether the queue has been found full (said once).
    found_full: bool,
    /// When the next entry holding answer pages has been idle for
    /// [`PAGES_KEPT`]; none while no entry holds any.
    give_back_at: Option<Instant>,
}

/// The rings of a mount, set up and not yet started.
pub struct Rings {
    queues: Vec<Queue>,
}

/// The answer to a request whose handling panicked.
const PANICKED: Result<usize, Failure> = Err(Failure::Errno(fuser::Errno::EIO));

/// Keeps the calling thread on `cpu`: the kernel queues a request on the
/// ring of the CPU it was made on, so its thread is woken there, without
/// the cross-CPU wake-up of a thread that ran elsewhere. Best effort: a
/// CPU outside the thread's allowed set leaves it where it was. (Threads
/// it starts do not inherit this: see [`crate::workers`].)
fn pin_to_cpu(cpu: usize) {
    if cpu >= CpuSet::MAX_CPU {
        return;
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    if let Err(e) = sched_setaffinity(None, &set) {
        tracing::debug!(
            cpu,
            "a FUSE ring thread could not be pinned to its CPU: {e}"
        );
    }
}

/// The kernel's number of queues: one per possible CPU.
fn possible_cpus() -> usize {
    let listed = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok();
    let highest = listed.as_deref().and_then(|list| {
        list.trim()
            .split(',')
            .filter_map(|range| range.rsplit('-').next()?.parse::<usize>().ok())
            .max()
    });
    match highest {
        Some(highest) => highest + 1,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

impl Rings {
    /// Rings and buffers for every queue, `depth` entries each.
    pub fn prepare(depth: usize) -> io::Result<Rings> {
        let depth = depth.max(1);
        let most = depth.max(MAX_ENTRIES);
        let payload = super::MAX_PAYLOAD as usize;
        let (submissions, completions) = ring_sizes(depth, most);
        let queues = (0..possible_cpus())
            .map(|qid| {
                Ok(Queue {
                    qid: qid as u16,
                    ring: IoUring::builder()
                        .setup_cqsize(completions)
                        .build(submissions)?,
                    wake: Arc::new(eventfd(0, EventfdFlags::CLOEXEC)?),
                    slots: (0..depth)
                        .map(|_| Slot::new(payload).map(Some))
                        .collect::<io::Result<_>>()?,
                    registered: vec![false; depth],
                    live: depth,
                    away: 0,
                    ready: depth,
                    most,
                    found_full: false,
                    give_back_at: None,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Rings { queues })
    }

    /// Registers every entry on `/dev/fuse` (`fuse`) and serves the
    /// queues, a thread each, until the kernel ends the connection.
    pub fn start(self, fuse: Arc<OwnedFd>, inner: Arc<Inner>) {
        tracing::info!(
            queues = self.queues.len(),
            "requests go through FUSE over io_uring"
        );
        for queue in self.queues {
            let (fuse, inner) = (fuse.clone(), inner.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("fuse-ring-{}", queue.qid))
                .spawn(move || {
                    if let Err(e) = queue.serve(&fuse, &inner) {
                        tracing::warn!("a FUSE ring ended with an error: {e}");
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a FUSE ring thread: {e}");
            }
        }
    }
}

/// Submission and completion entries of a queue's io_uring. Submissions
/// wait only until the next submit (a full queue is submitted at once);
/// completions have room for every entry's and the wake read's at once,
/// so none overflows, within the kernel's limits (32768 and 65536).
fn ring_sizes(depth: usize, most: usize) -> (u32, u32) {
    let submissions = (depth * 2 + 2).next_power_of_two().min(4096);
    let completions = (most + 1).next_power_of_two().clamp(submissions, 65536);
    (submissions as u32, completions as u32)
}

/// A `FUSE_IO_URING_CMD_*` for slot `index`.
fn command(fuse: &OwnedFd, op: u32, qid: u16, commit_id: u64, index: usize) -> Entry128 {
    opcode::UringCmd80::new(types::Fd(fuse.as_raw_fd()), op)
        .cmd(abi::cmd_req(commit_id, qid))
        .build()
        .user_data(index as u64)
}

/// Sets the `len` field of a 128-byte SQE, which `UringCmd80` leaves at 0
/// and registration needs (the number of iovecs: 2).
fn with_len(entry: Entry128, len: u32) -> Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]`: the 64-byte `io_uring_sqe`, whose
    // `len` (u32) is at bytes 24..28, then 64 command bytes; plain data
    // with no drop, so its bytes may be copied out and back.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: the same bytes, one field changed to another valid length.
    unsafe { std::mem::transmute::<[u8; 128], Entry128>(raw) }
}

impl Queue {
    fn push(&mut self, entry: &Entry128) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry names (a slot's, the wake
            // buffer) lives as long as the queue and is not moved.
            match unsafe { self.ring.submission().push(entry) } {
                Ok(()) => return Ok(()),
                Err(_) => {
                    self.ring.submit()?;
                }
            }
        }
    }

    fn register(&mut self, fuse: &OwnedFd, index: usize) -> io::Result<()> {
        let iov = self.slots[index]
            .as_ref()
            .expect("registered while on the ring")
            .iov
            .as_ptr();
        let entry = opcode::UringCmd80::new(types::Fd(fuse.as_raw_fd()), abi::CMD_REGISTER)
            .cmd(abi::cmd_req(0, self.qid))
            .addr(Some(iov as u64))
            .build()
            .user_data(index as u64);
        self.push(&with_len(entry, 2))
    }

    /// Registers new entries while fewer than `ready` are left beside
    /// those away.
    fn keep_ready(&mut self, fuse: &OwnedFd, inner: &Inner) -> io::Result<()> {
        while self.slots.len() - self.away < self.ready {
            if self.slots.len() >= self.most {
                if !std::mem::replace(&mut self.found_full, true) {
                    tracing::warn!(
                        qid = self.qid,
                        entries = self.most,
                        "a FUSE ring queue is full of requests waiting on the server or on \
                         a release: others made on its CPU wait for one of them"
                    );
                }
                return Ok(());
            }
            let slot = match Slot::new(super::MAX_PAYLOAD as usize) {
                Ok(slot) => slot,
                Err(e) => {
                    if !std::mem::replace(&mut self.found_full, true) {
                        tracing::warn!(qid = self.qid, "a FUSE ring queue cannot grow: {e}");
                    }
                    return Ok(());
                }
            };
            let index = self.slots.len();
            self.slots.push(Some(slot));
            self.registered.push(false);
            self.live += 1;
            self.register(fuse, index)?;
            registered(inner, 1);
        }
        Ok(())
    }

    fn commit(&mut self, fuse: &OwnedFd, index: usize) -> io::Result<()> {
        let slot = self.slots[index]
            .as_ref()
            .expect("committed while on the ring");
        let commit_id = slot.header.ent_in_out.commit_id;
        if slot.payload.holds_pages() && self.give_back_at.is_none() {
            self.give_back_at = Some(slot.answered + PAGES_KEPT);
        }
        let entry = command(fuse, abi::CMD_COMMIT_AND_FETCH, self.qid, commit_id, index);
        self.push(&entry)
    }

    fn serve(mut self, fuse: &Arc<OwnedFd>, inner: &Arc<Inner>) -> io::Result<()> {
        pin_to_cpu(self.qid as usize);
        let (done_tx, done_rx) = mpsc::channel::<(usize, Slot)>();
        let mut wake_buf = Box::new([0u8; 8]);
        let wake_read = |buf: &mut [u8; 8], wake: &OwnedFd| {
            Entry128::from(
                opcode::Read::new(types::Fd(wake.as_raw_fd()), buf.as_mut_ptr(), 8)
                    .build()
                    .user_data(WAKE),
            )
        };
        let wake = self.wake.clone();
        self.push(&wake_read(&mut wake_buf, &wake))?;
        for index in 0..self.slots.len() {
            self.register(fuse, index)?;
        }
        registered(inner, self.slots.len());
        let started = Instant::now();
        let mut completions = Vec::new();
        while self.live > 0 {
            let waited = match self.give_back_at {
                None => self.ring.submit_and_wait(1),
                Some(at) => {
                    let wait = types::Timespec::from(at.saturating_duration_since(Instant::now()));
                    let args = types::SubmitArgs::new().timespec(&wait);
                    self.ring.submitter().submit_with_args(1, &args)
                }
            };
            match waited {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            if self.give_back_at.is_some_and(|at| at <= Instant::now()) {
                self.give_back_idle_pages();
            }
            completions.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            for (user_data, result) in completions.drain(..) {
                if user_data == WAKE {
                    while let Ok((index, slot)) = done_rx.try_recv() {
                        self.slots[index] = Some(slot);
                        self.away -= 1;
                        self.commit(fuse, index)?;
                    }
                    self.push(&wake_read(&mut wake_buf, &wake))?;
                    continue;
                }
                let index = user_data as usize;
                if result == -libc::EAGAIN
                    && !self.registered[index]
                    && started.elapsed() < REGISTER_PATIENCE
                {
                    // The kernel has not taken the reply to FUSE_INIT in yet.
                    std::thread::sleep(REGISTER_RETRY);
                    self.register(fuse, index)?;
                    continue;
                }
                if result < 0 {
                    if ![libc::ENOTCONN, libc::ECONNABORTED].contains(&-result) {
                        tracing::warn!(
                            qid = self.qid,
                            "a FUSE ring entry ended: {}",
                            io::Error::from_raw_os_error(-result)
                        );
                    }
                    self.live -= 1;
                    continue;
                }
                self.registered[index] = true;
                self.handle(fuse, inner, index, &done_tx, &wake)?;
            }
        }
        Ok(())
    }

    /// Gives back the answer pages of entries idle for [`PAGES_KEPT`], and
    /// says when to look again. Only right after a submission has taken
    /// every commit, so that no answer the kernel has still to read is
    /// freed; entries away on workers are not here to be freed. An entry
    /// the kernel has just put a request in loses no argument of it (those
    /// are in its first page, which is kept) and is answered afterwards.
    fn give_back_idle_pages(&mut self) {
        let now = Instant::now();
        if !self.ring.submission().is_empty() {
            return;
        }
        let mut next: Option<Instant> = None;
        for slot in self.slots.iter_mut().flatten() {
            if !slot.payload.holds_pages() {
                continue;
            }
            let due = slot.answered + PAGES_KEPT;
            if due <= now {
                slot.payload.give_back();
            } else {
                next = Some(next.map_or(due, |next| next.min(due)));
            }
        }
        self.give_back_at = next;
    }

    /// Answers the request in slot `index`: here if it can be answered
    /// from memory, else on a worker, which hands the slot back.
    fn handle(
        &mut self,
        fuse: &OwnedFd,
        inner: &Arc<Inner>,
        index: usize,
        done: &mpsc::Sender<(usize, Slot)>,
        wake: &Arc<OwnedFd>,
    ) -> io::Result<()> {
        let mut slot = self.slots[index]
            .take()
            .expect("a request in a slot on the ring");
        let (header, op) = slot.request();
        counted(inner);
        let name = op_name(&op);
        let span = tracing::debug_span!("ring", op = name, ino = header.nodeid, pid = header.pid);
        let _entered = span.enter();
        let timer = inner.timer(name);
        let quick = wait::quick_unless_panicked(|| slot.answer(inner, &op)).unwrap_or(PANICKED);
        let away = match quick {
            Err(Failure::WouldBlock) => None,
            Err(Failure::Parked(request)) => Some(request),
            result => {
                slot.finish(header.unique, result);
                timer.finish(&inner.latency);
                self.slots[index] = Some(slot);
                return self.commit(fuse, index);
            }
        };
        let away_from_ring = Away {
            inner: inner.clone(),
            slot: Some(slot),
            header,
            op,
            index,
            done: done.clone(),
            wake: wake.clone(),
            span: span.clone(),
            timer: Some(timer),
        };
        match away {
            None => away_from_ring.answer_on_worker(),
            Some(request) => away_from_ring.park(request),
        }
        self.away += 1;
        self.keep_ready(fuse, inner)
    }
}

/// A request answered away from its ring: on a worker, or kept aside while
/// it is parked (an open waiting for the release of another version's
/// open files). Its entry goes back to the ring once it is answered, and
/// when it is dropped unanswered, with `EIO`: a request never answered
/// would hang its caller.
struct Away {
    inner: Arc<Inner>,
    /// Taken when the entry goes back.
    slot: Option<Slot>,
    header: InHeader,
    op: Op,
    index: usize,
    done: mpsc::Sender<(usize, Slot)>,
    wake: Arc<OwnedFd>,
    span: tracing::Span,
    /// Taken when the request is answered.
    timer: Option<crate::fuse::Timer>,
}

impl Away {
    fn answer_on_worker(self) {
        let workers = match Inner::is_content(&self.op) {
            true => self.inner.content_workers.clone(),
            false => self.inner.metadata_workers.clone(),
        };
        let mut away = self;
        workers.spawn(move || {
            let _entered = away.span.clone().entered();
            let result = away.attempt();
            away.answer(result);
        });
    }

    /// Kept aside, holding no thread, until the open it asks is resumed:
    /// then asked again quick first on the thread that resumes it (an
    /// answer from memory, such as `ESTALE` at the deadline, waits for no
    /// worker that downloads may all hold), on a worker if it must wait.
    fn park(self, request: u64) {
        let core = self.inner.core.clone();
        core.resume_when_released(
            request,
            Box::new(move || {
                let mut away = self;
                let _entered = away.span.clone().entered();
                match wait::quick(|| away.attempt()) {
                    Err(Failure::WouldBlock) => away.answer_on_worker(),
                    result => away.answer(result),
                }
            }),
        );
    }

    /// Answers the request into its entry; a panic fails it (`EIO`),
    /// not the ring.
    fn attempt(&mut self) -> Result<usize, Failure> {
        let slot = self.slot.as_mut().expect("an entry not yet answered");
        let (inner, op) = (&self.inner, &self.op);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slot.answer(inner, op)))
            .unwrap_or(PANICKED)
    }

    /// Answers with `result`, unless it parked again.
    fn answer(mut self, result: Result<usize, Failure>) {
        if let Err(Failure::Parked(request)) = result {
            return self.park(request);
        }
        self.finish(result);
    }

    /// Writes the answer and gives the entry back to its ring.
    fn finish(&mut self, result: Result<usize, Failure>) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        slot.finish(self.header.unique, result);
        if let Some(timer) = self.timer.take() {
            timer.finish(&self.inner.latency);
        }
        // The ring is gone when the connection is: nobody to tell.
        if self.done.send((self.index, slot)).is_ok() {
            let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        }
    }
}

impl Drop for Away {
    fn drop(&mut self) {
        self.finish(Err(Failure::Errno(fuser::Errno::EIO)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_suit_the_kernel_for_any_thread_count() {
        for threads in [1, 16, 200, 5000] {
            let depth = 9 * threads;
            let (submissions, completions) = ring_sizes(depth, depth.max(MAX_ENTRIES));
            assert!(submissions.is_power_of_two() && submissions <= 32768);
            assert!(completions.is_power_of_two() && completions <= 65536);
            assert!(completions >= submissions, "the kernel refuses fewer");
            assert!(completions as usize > MAX_ENTRIES.min(65535));
        }
        // Rings of those sizes are set up where io_uring is allowed.
        if IoUring::<Entry128, cqueue::Entry>::builder()
            .build(2)
            .is_ok()
        {
            for threads in [1, 200] {
                let (submissions, completions) =
                    ring_sizes(9 * threads, (9 * threads).max(MAX_ENTRIES));
                IoUring::<Entry128, cqueue::Entry>::builder()
                    .setup_cqsize(completions)
                    .build(submissions)
                    .unwrap_or_else(|e| panic!("{threads} threads: {e}"));
            }
        }
    }
}
