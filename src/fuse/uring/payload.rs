//! A ring entry's payload buffer: an anonymous mapping of its own, so that
//! pages no answer wrote take no memory, and those answers did write can be
//! given back once the entry sits idle ([`Payload::give_back`]).

use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mmap_anonymous, munmap};

pub(super) struct Payload {
    start: NonNull<u8>,
    len: usize,
    /// How far answers have written since the pages were last given back.
    written: usize,
}

// SAFETY: the mapping is owned by this value alone and freed by its Drop;
// it is used by one thread at a time (see `Slot`).
unsafe impl Send for Payload {}

/// The first page is never given back: the kernel writes each request's
/// arguments there (a name at most), so a request written into an idle
/// entry while its other pages are given back is never touched.
fn kept() -> usize {
    rustix::param::page_size()
}

impl Payload {
    pub(super) fn new(len: usize) -> io::Result<Payload> {
        // SAFETY: a new private anonymous mapping, at an address of the
        // kernel's choosing; nothing else refers to it.
        let start = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }?;
        Ok(Payload {
            start: NonNull::new(start.cast()).expect("mmap returns no null mapping"),
            len,
            written: 0,
        })
    }

    /// Notes that an answer wrote the first `len` bytes; whether they
    /// reach past the first page, which is never given back.
    pub(super) fn wrote(&mut self, len: usize) -> bool {
        self.written = self.written.max(len);
        len > kept()
    }

    /// Whether answers wrote pages that [`give_back`](Self::give_back)
    /// would free.
    pub(super) fn holds_pages(&self) -> bool {
        self.written > kept()
    }

    /// Frees the pages answers wrote past the first: they read as zeros
    /// until written again. Only while no answer in them is still to be
    /// read by the kernel.
    pub(super) fn give_back(&mut self) {
        let from = kept();
        let to = self
            .written
            .min(self.len)
            .next_multiple_of(from)
            .min(self.len);
        if to > from {
            // SAFETY: whole pages inside this value's own mapping (which
            // starts on a page); what they held is no longer needed.
            let freed = unsafe {
                madvise(
                    self.start.as_ptr().add(from).cast(),
                    to - from,
                    Advice::LinuxDontNeed,
                )
            };
            if let Err(e) = freed {
                tracing::debug!("a FUSE ring entry's pages were not given back: {e}");
                return;
            }
        }
        self.written = 0;
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.start.as_ptr()
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable for this value's life.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl DerefMut for Payload {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and writable; `&mut self` makes it unique.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer referred to.
        if let Err(e) = unsafe { munmap(self.start.as_ptr().cast(), self.len) } {
            tracing::debug!("a FUSE ring entry's buffer was not unmapped: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resident_pages(payload: &Payload) -> usize {
        let page = kept();
        let mut pages = vec![0u8; payload.len.div_ceil(page)];
        // SAFETY: the payload's own mapping, and a vector a byte a page.
        let done = unsafe {
            libc::mincore(
                payload.start.as_ptr().cast(),
                payload.len,
                pages.as_mut_ptr(),
            )
        };
        assert_eq!(done, 0, "mincore: {}", io::Error::last_os_error());
        pages.iter().filter(|p| *p & 1 == 1).count()
    }

    #[test]
    fn written_pages_past_the_first_are_given_back_and_read_as_zeros() {
        let page = kept();
        let mut payload = Payload::new(64 * page).unwrap();
        assert_eq!(resident_pages(&payload), 0, "nothing written, nothing held");
        assert!(!payload.holds_pages());

        let len = 10 * page + 7;
        payload[..len].fill(0xAB);
        assert!(payload.wrote(len), "past the first page");
        assert_eq!(resident_pages(&payload), 11);
        assert!(payload.holds_pages());

        payload.give_back();
        assert_eq!(resident_pages(&payload), 1, "the first page is kept");
        assert!(
            payload[..page].iter().all(|b| *b == 0xAB),
            "and what it held"
        );
        assert!(
            payload[page..].iter().all(|b| *b == 0),
            "the rest reads as zeros"
        );
        assert!(!payload.holds_pages());

        // Written again, after: the new bytes, not zeros.
        payload[..3 * page].fill(0xCD);
        payload.wrote(3 * page);
        assert!(payload[..3 * page].iter().all(|b| *b == 0xCD));
    }

    #[test]
    fn an_answer_within_the_first_page_holds_nothing_to_give_back() {
        let mut payload = Payload::new(16 * kept()).unwrap();
        payload[..100].fill(1);
        assert!(!payload.wrote(100), "within the first page");
        assert!(!payload.holds_pages());
        payload.give_back();
        assert!(payload[..100].iter().all(|b| *b == 1));
    }
}
