//! The few structures of the FUSE protocol the io_uring transport reads
//! and writes itself, laid out as the kernel's `include/uapi/linux/fuse.h`
//! has them (protocol 7.42 and later); fuser keeps its own private.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType};

/// `FUSE_IO_URING_CMD_REGISTER`: hands a ring entry's buffers to the kernel.
pub const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: answers the entry's request and
/// waits for the next one.
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

pub const FUSE_LOOKUP: u32 = 1;
pub const FUSE_GETATTR: u32 = 3;
pub const FUSE_READLINK: u32 = 5;
pub const FUSE_OPEN: u32 = 14;
pub const FUSE_READ: u32 = 15;
pub const FUSE_STATFS: u32 = 17;
pub const FUSE_RELEASE: u32 = 18;
pub const FUSE_GETXATTR: u32 = 22;
pub const FUSE_LISTXATTR: u32 = 23;
pub const FUSE_FLUSH: u32 = 25;
pub const FUSE_OPENDIR: u32 = 27;
pub const FUSE_READDIR: u32 = 28;
pub const FUSE_RELEASEDIR: u32 = 29;
pub const FUSE_ACCESS: u32 = 34;
pub const FUSE_IOCTL: u32 = 39;
pub const FUSE_READDIRPLUS: u32 = 44;

/// `struct fuse_in_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

/// `struct fuse_out_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

/// `struct fuse_uring_ent_in_out`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EntInOut {
    pub flags: u64,
    pub commit_id: u64,
    pub payload_sz: u32,
    pub padding: u32,
    pub reserved: u64,
}

/// `struct fuse_uring_req_header`: the header buffer of one ring entry.
#[repr(C, align(8))]
pub struct ReqHeader {
    /// A `fuse_in_header` from the kernel, a `fuse_out_header` back.
    pub in_out: [u8; 128],
    /// The operation's fixed argument (its first one).
    pub op_in: [u8; 128],
    pub ent_in_out: EntInOut,
}

impl Default for ReqHeader {
    fn default() -> Self {
        ReqHeader {
            in_out: [0; 128],
            op_in: [0; 128],
            ent_in_out: EntInOut::default(),
        }
    }
}

/// `struct fuse_uring_cmd_req`, in the 80 command bytes of a 128-byte SQE.
pub fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    // flags (u64) stay 0.
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// `struct fuse_read_in` (READ, READDIR, READDIRPLUS).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_open_in` (OPEN, OPENDIR).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

/// `struct fuse_release_in` (RELEASE, RELEASEDIR).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

/// `struct fuse_access_in`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessIn {
    pub mask: u32,
    pub padding: u32,
}

/// `struct fuse_attr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

/// `struct fuse_entry_out`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}

/// `struct fuse_attr_out`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}

/// `struct fuse_open_out`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub backing_id: i32,
}

/// `struct fuse_kstatfs` (the whole of `fuse_statfs_out`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct StatfsOut {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

/// `struct fuse_dirent` without its name.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Dirent {
    pub ino: u64,
    pub off: u64,
    pub namelen: u32,
    pub kind: u32,
}

/// Plain data the kernel reads and writes: `#[repr(C)]`, integers only,
/// no padding the kernel would not have.
///
/// # Safety
/// Only for the `#[repr(C)]` integer structures of this module, whose
/// every bit pattern is valid.
pub unsafe trait Wire: Copy + Default {}

// SAFETY: each is `#[repr(C)]` of integers with no implicit padding (the
// kernel's layout, checked by the size tests below).
unsafe impl Wire for InHeader {}
// SAFETY: as above.
unsafe impl Wire for OutHeader {}
// SAFETY: as above.
unsafe impl Wire for ReadIn {}
// SAFETY: as above.
unsafe impl Wire for OpenIn {}
// SAFETY: as above.
unsafe impl Wire for ReleaseIn {}
// SAFETY: as above.
unsafe impl Wire for AccessIn {}
// SAFETY: as above.
unsafe impl Wire for EntryOut {}
// SAFETY: as above.
unsafe impl Wire for AttrOut {}
// SAFETY: as above.
unsafe impl Wire for OpenOut {}
// SAFETY: as above.
unsafe impl Wire for StatfsOut {}
// SAFETY: as above.
unsafe impl Wire for Dirent {}

/// Reads a `T` from the start of `bytes` (zeros where `bytes` is short,
/// as the kernel sends older, shorter versions of some structures).
pub fn read<T: Wire>(bytes: &[u8]) -> T {
    let mut value = T::default();
    let n = size_of::<T>().min(bytes.len());
    // SAFETY: `T` is plain integers (`Wire`), so any bytes make a valid
    // value; at most `size_of::<T>()` bytes are written into it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut value).cast::<u8>(), n);
    }
    value
}

/// The bytes of `value`, as the kernel reads them.
pub fn bytes<T: Wire>(value: &T) -> &[u8] {
    // SAFETY: `T` is plain integers without padding (`Wire`): every byte
    // is initialized.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

fn split(time: SystemTime) -> (u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs(), since.subsec_nanos())
}

pub fn ttl(ttl: Duration) -> (u64, u32) {
    (ttl.as_secs(), ttl.subsec_nanos())
}

/// The kernel's `S_IF*` bits of a file type.
pub fn mode_type(kind: FileType) -> u32 {
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// The `d_type` of a file type, as a directory entry names it.
pub fn dirent_type(kind: FileType) -> u32 {
    mode_type(kind) >> 12
}

/// fuser's attributes (as the adapter makes them) on the wire.
pub fn attr(attr: &FileAttr) -> Attr {
    let (atime, atimensec) = split(attr.atime);
    let (mtime, mtimensec) = split(attr.mtime);
    let (ctime, ctimensec) = split(attr.ctime);
    Attr {
        ino: attr.ino.0,
        size: attr.size,
        blocks: attr.blocks,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        mode: mode_type(attr.kind) | u32::from(attr.perm),
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.blksize,
        flags: attr.flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_kernels() {
        assert_eq!(size_of::<InHeader>(), 40);
        assert_eq!(size_of::<OutHeader>(), 16);
        assert_eq!(size_of::<EntInOut>(), 32);
        assert_eq!(size_of::<ReqHeader>(), 288);
        assert_eq!(size_of::<ReadIn>(), 40);
        assert_eq!(size_of::<ReleaseIn>(), 24);
        assert_eq!(size_of::<Attr>(), 88);
        assert_eq!(size_of::<EntryOut>(), 128);
        assert_eq!(size_of::<AttrOut>(), 104);
        assert_eq!(size_of::<OpenOut>(), 16);
        assert_eq!(size_of::<StatfsOut>(), 80);
        assert_eq!(size_of::<Dirent>(), 24);
    }

    #[test]
    fn a_short_structure_reads_as_zeros_past_its_end() {
        let open: OpenIn = read(&0x8000u32.to_ne_bytes());
        assert_eq!((open.flags, open.open_flags), (0x8000, 0));
    }
}
