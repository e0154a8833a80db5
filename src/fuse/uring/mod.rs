//! FUSE over io_uring (Linux 6.14+, with the fuse module's `enable_uring`
//! set): a second transport for the same adapter. Where the kernel offers
//! it at `FUSE_INIT` and `--io-uring` asks for it, each possible CPU gets a
//! queue of ring entries, served by a thread of its own; the kernel puts
//! each request into an entry of the queue of the CPU it was made on, and
//! the answer goes back in the same buffers with the next fetch, one
//! system call for both. FORGET and INTERRUPT still come through
//! `/dev/fuse`, where fuser serves them, as it serves everything sent
//! before the ring is ready.
//!
//! The requests are parsed and answered here ([`abi`]), by the same calls
//! into the core and the same shared answers ([`super::answers`]) as the
//! fuser adapter; one that must wait goes to the same worker pools. Cached
//! files are passed through as over `/dev/fuse`, to backing files both
//! transports register the same way ([`super::backing`]).

mod abi;
mod payload;
mod ring;

use fuser::{AccessFlags, Errno, FileAttr, FopenFlags};

use super::answers::{self, STATFS};
use super::{Inner, errno};
use crate::fs::{FsError, ReadMode};
use crate::stats::Stats;
use abi::{InHeader, Wire};

pub(super) use ring::Rings;

/// The largest request or reply payload a ring entry holds; the kernel is
/// told at `FUSE_INIT` to send nothing larger (`max_write` and the pages
/// of a read), since it insists every entry can hold its largest.
pub(super) const MAX_PAYLOAD: u32 = 1 << 20;

/// A request as read from a ring entry: what is needed to answer it.
#[derive(Debug)]
enum Op {
    Lookup {
        parent: u64,
        name: Option<String>,
    },
    Getattr {
        ino: u64,
    },
    Readlink {
        ino: u64,
    },
    Open {
        ino: u64,
        flags: i32,
        /// The request's own number, by which a parked open is resumed.
        unique: u64,
    },
    Read {
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        /// The reader's open flags.
        flags: i32,
    },
    Release {
        fh: u64,
    },
    Opendir,
    Readdir {
        ino: u64,
        offset: u64,
        size: u32,
        plus: bool,
    },
    Empty,
    Flush,
    Statfs,
    Access {
        mask: i32,
    },
    Ioctl,
    Xattr,
    ReadOnly,
    Unknown,
}

/// Opcodes that would change something: refused as by the fuser adapter.
const WRITES: &[u32] = &[
    4,  // SETATTR
    6,  // SYMLINK
    8,  // MKNOD
    9,  // MKDIR
    10, // UNLINK
    11, // RMDIR
    12, // RENAME
    13, // LINK
    16, // WRITE
    21, // SETXATTR
    24, // REMOVEXATTR
    35, // CREATE
    45, // RENAME2
];

fn parse(header: &InHeader, op_in: &[u8], payload: &[u8]) -> Op {
    let ino = header.nodeid;
    match header.opcode {
        abi::FUSE_LOOKUP => {
            // The name, ended by a NUL.
            let name = payload.split(|b| *b == 0).next().unwrap_or_default();
            Op::Lookup {
                parent: ino,
                name: std::str::from_utf8(name).ok().map(str::to_owned),
            }
        }
        abi::FUSE_GETATTR => Op::Getattr { ino },
        abi::FUSE_READLINK => Op::Readlink { ino },
        abi::FUSE_OPEN => {
            let open: abi::OpenIn = abi::read(op_in);
            Op::Open {
                ino,
                flags: open.flags as i32,
                unique: header.unique,
            }
        }
        abi::FUSE_READ => {
            let read: abi::ReadIn = abi::read(op_in);
            Op::Read {
                ino,
                fh: read.fh,
                offset: read.offset,
                size: read.size,
                flags: read.flags as i32,
            }
        }
        abi::FUSE_RELEASE => {
            let release: abi::ReleaseIn = abi::read(op_in);
            Op::Release { fh: release.fh }
        }
        abi::FUSE_OPENDIR => Op::Opendir,
        abi::FUSE_READDIR | abi::FUSE_READDIRPLUS => {
            let read: abi::ReadIn = abi::read(op_in);
            Op::Readdir {
                ino,
                offset: read.offset,
                size: read.size,
                plus: header.opcode == abi::FUSE_READDIRPLUS,
            }
        }
        abi::FUSE_RELEASEDIR | 20 /* FSYNC */ => Op::Empty,
        abi::FUSE_FLUSH => Op::Flush,
        abi::FUSE_STATFS => Op::Statfs,
        abi::FUSE_ACCESS => {
            let access: abi::AccessIn = abi::read(op_in);
            Op::Access {
                mask: access.mask as i32,
            }
        }
        abi::FUSE_IOCTL => Op::Ioctl,
        abi::FUSE_GETXATTR | abi::FUSE_LISTXATTR => Op::Xattr,
        opcode if WRITES.contains(&opcode) => Op::ReadOnly,
        _ => Op::Unknown,
    }
}

/// An answer not given: the error the kernel gets, or the operation must
/// be done again off the ring thread.
enum Failure {
    Errno(Errno),
    WouldBlock,
    /// An open parked until another version's open files are released,
    /// resumed by this request number.
    Parked(u64),
}

impl From<Errno> for Failure {
    fn from(errno: Errno) -> Self {
        Failure::Errno(errno)
    }
}

/// A reply's payload, written into the entry's payload buffer.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    /// Appends `parts`, or nothing and false where they would not fit.
    fn push(&mut self, parts: &[&[u8]], pad_to: usize) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let padded = len.next_multiple_of(pad_to);
        if self.len + padded > self.buf.len() {
            return false;
        }
        let mut at = self.len;
        for part in parts {
            self.buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.buf[at..self.len + padded].fill(0);
        self.len += padded;
        true
    }

    fn value<T: Wire>(&mut self, value: &T) -> bool {
        self.push(&[abi::bytes(value)], 1)
    }
}

fn entry_out(inner: &Inner, entry: &crate::fs::Entry) -> abi::EntryOut {
    let (valid, valid_nsec) = abi::ttl(entry.ttl);
    let attr: FileAttr = inner.attr(&entry.attr);
    abi::EntryOut {
        nodeid: entry.attr.ino,
        generation: 0,
        entry_valid: valid,
        attr_valid: valid,
        entry_valid_nsec: valid_nsec,
        attr_valid_nsec: valid_nsec,
        attr: abi::attr(&attr),
    }
}

impl Inner {
    /// A core error as the kernel gets it, logged as the adapter logs it;
    /// or the operation must move off the ring thread.
    fn ring_failure(&self, op: &str, what: Result<u64, (u64, &str)>, e: FsError) -> Failure {
        if e.is_would_block() {
            return Failure::WouldBlock;
        }
        if let FsError::WaitsForRelease { request } = e {
            return Failure::Parked(request);
        }
        match what {
            Ok(ino) => self.failed(op, ino, &e),
            Err((parent, name)) => {
                self.failures
                    .failed(op, &format!("{}/{name}", self.core.describe(parent)), &e)
            }
        }
        Failure::Errno(errno(&e))
    }

    /// Answers `op` into `out`: the payload's length, or why not.
    fn answer_ring(&self, op: &Op, out: &mut Out<'_>) -> Result<(), Failure> {
        match op {
            Op::Lookup { parent, name } => {
                let Some(name) = name else {
                    return Err(Errno::ENOENT.into());
                };
                let entry = self
                    .core
                    .lookup(*parent, name)
                    .map_err(|e| self.ring_failure("lookup", Err((*parent, name)), e))?;
                out.value(&entry_out(self, &entry));
            }
            Op::Getattr { ino } => {
                let entry = self
                    .core
                    .getattr(*ino)
                    .map_err(|e| self.ring_failure("getattr", Ok(*ino), e))?;
                let (valid, valid_nsec) = abi::ttl(entry.ttl);
                out.value(&abi::AttrOut {
                    attr_valid: valid,
                    attr_valid_nsec: valid_nsec,
                    dummy: 0,
                    attr: abi::attr(&self.attr(&entry.attr)),
                });
            }
            Op::Readlink { ino } => {
                let target = self
                    .core
                    .readlink(*ino)
                    .map_err(|e| self.ring_failure("readlink", Ok(*ino), e))?;
                out.push(&[target.as_bytes()], 1);
            }
            Op::Open { ino, flags, unique } => {
                if let Some(errno) = self.open_refused() {
                    return Err(errno.into());
                }
                let open = self
                    .core
                    .open_with_backing(*ino, *flags, *unique, |file| self.device.register(file))
                    .map_err(|e| self.ring_failure("open", Ok(*ino), e))?;
                let mut open_flags = answers::open_flags(&open.mode);
                let backing_id = match &open.mode {
                    ReadMode::Passthrough(backing) => {
                        open_flags |= FopenFlags::FOPEN_PASSTHROUGH;
                        backing.id() as i32
                    }
                    _ => 0,
                };
                out.value(&abi::OpenOut {
                    fh: open.fh,
                    open_flags: open_flags.bits(),
                    backing_id,
                });
            }
            Op::Read {
                ino,
                fh,
                offset,
                size,
                flags,
            } => {
                let read = self
                    .read(*ino, *fh, *offset, *size, *flags)
                    .map_err(|e| self.ring_failure("read", Ok(*ino), e))?;
                if !out.push(&[&read.bytes], 1) {
                    return Err(Errno::EIO.into());
                }
            }
            Op::Release { fh } => self.release(*fh),
            Op::Opendir => {
                let fh = self.opendir()?;
                out.value(&abi::OpenOut {
                    fh: fh.0,
                    open_flags: 0,
                    backing_id: 0,
                });
            }
            Op::Readdir {
                ino,
                offset,
                size,
                plus,
            } => {
                let listing = self
                    .core
                    .listing(*ino, *offset)
                    .map_err(|e| self.ring_failure("readdir", Ok(*ino), e))?;
                let limit = (*size as usize).min(out.buf.len());
                let mut dir = Out {
                    buf: &mut out.buf[..limit],
                    len: 0,
                };
                self.core.fill(&listing, *offset, *plus, |entry, next| {
                    let kind = super::dir_reply::file_type(entry.kind);
                    let dirent = abi::Dirent {
                        ino: entry.ino,
                        off: next,
                        namelen: entry.name.len() as u32,
                        kind: abi::dirent_type(kind),
                    };
                    let name = entry.name.as_bytes();
                    let added = match entry.entry.filter(|_| *plus) {
                        Some(plus) => {
                            let e = entry_out(self, &plus);
                            dir.push(&[abi::bytes(&e), abi::bytes(&dirent), name], 8)
                        }
                        None => dir.push(&[abi::bytes(&dirent), name], 8),
                    };
                    !added
                });
                out.len = dir.len;
            }
            Op::Empty => {}
            Op::Flush => return Err(answers::FLUSH.into()),
            Op::Statfs => {
                out.value(&abi::StatfsOut {
                    blocks: STATFS.blocks,
                    bfree: STATFS.bfree,
                    bavail: STATFS.bavail,
                    files: STATFS.files,
                    ffree: STATFS.ffree,
                    bsize: STATFS.bsize,
                    namelen: STATFS.namelen,
                    frsize: STATFS.frsize,
                    ..Default::default()
                });
            }
            Op::Access { mask } => self.access(AccessFlags::from_bits_retain(*mask))?,
            Op::Ioctl => return Err(answers::IOCTL.into()),
            Op::Xattr => return Err(answers::XATTR.into()),
            Op::ReadOnly => return Err(Errno::EROFS.into()),
            Op::Unknown => return Err(Errno::ENOSYS.into()),
        }
        Ok(())
    }

    /// Whether `op` goes to the download pool when it must wait.
    fn is_content(op: &Op) -> bool {
        matches!(op, Op::Open { .. } | Op::Read { .. })
    }
}

/// The name of an operation, as the latency histogram labels it.
fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Lookup { .. } => "lookup",
        Op::Getattr { .. } => "getattr",
        Op::Readlink { .. } => "readlink",
        Op::Open { .. } => "open",
        Op::Read { .. } => "read",
        Op::Release { .. } => "release",
        Op::Opendir => "opendir",
        Op::Readdir { plus: false, .. } => "readdir",
        Op::Readdir { plus: true, .. } => "readdirplus",
        Op::Empty => "empty",
        Op::Flush => "flush",
        Op::Statfs => "statfs",
        Op::Access { .. } => "access",
        Op::Ioctl => "ioctl",
        Op::Xattr => "xattr",
        Op::ReadOnly => "write",
        Op::Unknown => "unknown",
    }
}

/// Counts entries registered on a ring (`stats.json`, `fuse.ring_entries`).
fn registered(inner: &Inner, entries: usize) {
    Stats::add(
        &inner.core.dataset().context().stats.ring_entries,
        entries as u64,
    );
}

/// Counts a request answered over the ring (`stats.json`, `fuse.ring_requests`).
fn counted(inner: &Inner) {
    Stats::add(&inner.core.dataset().context().stats.ring_requests, 1);
}

/// Sets up the rings, `depth` entries a queue: at `FUSE_INIT`, once the
/// kernel has offered the transport and before it is asked for, since the
/// kernel holds every request back until the rings are registered.
/// `None` (logged): not to be asked for.
pub(super) fn prepare(depth: usize) -> Option<Rings> {
    match Rings::prepare(depth) {
        Ok(rings) => Some(rings),
        Err(e) => {
            tracing::warn!(
                "FUSE over io_uring cannot be set up ({e}): requests go through /dev/fuse"
            );
            None
        }
    }
}

/// Whether the fuse module lets mounts use io_uring (the module's
/// `enable_uring`), for the log line of a mount that asked for it.
pub(super) fn enabled_in_kernel() -> Option<bool> {
    let value = std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").ok()?;
    Some(value.trim() == "Y")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: u32, nodeid: u64) -> InHeader {
        InHeader {
            opcode,
            nodeid,
            unique: 2,
            ..Default::default()
        }
    }

    #[test]
    fn a_lookup_names_what_comes_before_the_nul() {
        let op = parse(&header(abi::FUSE_LOOKUP, 7), &[], b"ao.png\0");
        assert!(
            matches!(op, Op::Lookup { parent: 7, name: Some(ref n) } if n == "ao.png"),
            "{op:?}"
        );
        let op = parse(&header(abi::FUSE_LOOKUP, 7), &[], b"\xff\0");
        assert!(matches!(op, Op::Lookup { name: None, .. }), "{op:?}");
    }

    #[test]
    fn a_read_takes_its_handle_offset_size_and_flags_from_the_fixed_argument() {
        let read = abi::ReadIn {
            fh: 9,
            offset: 4096,
            size: 131072,
            flags: (libc::O_RDONLY | libc::O_DIRECT) as u32,
            ..Default::default()
        };
        let op = parse(&header(abi::FUSE_READ, 5), abi::bytes(&read), &[]);
        assert!(
            matches!(
                op,
                Op::Read {
                    ino: 5,
                    fh: 9,
                    offset: 4096,
                    size: 131072,
                    flags: libc::O_DIRECT,
                }
            ),
            "{op:?}"
        );
    }

    #[test]
    fn writes_are_refused_and_unknown_requests_are_not_implemented() {
        assert!(matches!(parse(&header(16, 5), &[], &[]), Op::ReadOnly));
        assert!(matches!(parse(&header(46, 5), &[], &[]), Op::Unknown));
    }

    #[test]
    fn directory_entries_are_padded_to_eight_bytes_and_refused_when_full() {
        let mut buf = [0xaa_u8; 40];
        let mut out = Out {
            buf: &mut buf,
            len: 0,
        };
        assert!(out.push(&[b"abcdefghij"], 8));
        assert_eq!(out.len, 16);
        assert!(out.push(&[b"0123", b"4567"], 8));
        assert_eq!(out.len, 24);
        assert!(!out.push(&[&[1u8; 17]], 8), "would end past the buffer");
        assert_eq!(out.len, 24);
        assert_eq!(&buf[..24], b"abcdefghij\0\0\0\0\0\x0001234567");
    }
}
