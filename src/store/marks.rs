//! Write marks: for each of a fixed number of slots, the highest log
//! position staged for any stream hashed to it.
//!
//! An entity actor re-reads its stream before each command in case another
//! writer appended to it (job counts are appended by task actors). Most
//! streams are only ever written by their own actor, and a read of RocksDB
//! (an iterator and a seek) is the dearest step of a small command. With
//! the marks, the actor asks "was anything of my stream written after the
//! position I know it through?" with one atomic load: a "no" is certain, a
//! "yes" may be another stream in the same slot and costs the read it
//! would have cost anyway.
//!
//! The writer notes a position when it stages an append, before the head
//! moves past it: whoever sees the head sees the mark.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use super::StreamId;

/// FNV-1a: stream ids are short, trusted keys; SipHash's DoS resistance is
/// not needed on the hottest map of the write path.
#[derive(Default)]
pub(super) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Slots in the table: 8 MiB. A batch keeps a task's state from its
/// assignment to its attempt's end (see `actors::batch`), up to a second or
/// two at full dispatch while some 70,000 stream writes a second land in
/// other slots; with 65,536 slots most of those states were taken for
/// changed and read again, with 2^20 about one in twenty.
const WRITE_MARK_SLOTS: usize = 1 << 20;

/// A stream's slot, computed once by whoever asks about it often.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteMark(usize);

impl WriteMark {
    pub fn of(stream: &StreamId) -> Self {
        // The write path's own hasher (its version map uses it too).
        let mut h = Fnv::default();
        stream.hash(&mut h);
        WriteMark((h.finish() as usize) % WRITE_MARK_SLOTS)
    }
}

pub(crate) struct WriteMarks {
    slots: Box<[AtomicU64]>,
}

impl WriteMarks {
    pub fn new() -> Self {
        WriteMarks {
            slots: (0..WRITE_MARK_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records that an event of the slot's stream is staged at or before
    /// `position`.
    pub fn note(&self, mark: WriteMark, position: u64) {
        // Release, then the head's publication: a reader that sees the
        // head past `position` sees this too.
        self.slots[mark.0].fetch_max(position, Ordering::Release);
    }

    pub fn since(&self, mark: &WriteMark) -> u64 {
        self.slots[mark.0].load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_says_no_only_when_nothing_was_written() {
        let marks = WriteMarks::new();
        let a = WriteMark::of(&StreamId::parse("task/acme/j/a").unwrap());
        assert_eq!(marks.since(&a), 0);
        marks.note(a, 7);
        marks.note(a, 5);
        assert_eq!(marks.since(&a), 7, "the highest position stays");
        let b = WriteMark::of(&StreamId::parse("task/acme/j/b").unwrap());
        assert_ne!(a, b, "two neighbouring ids land in different slots");
        assert_eq!(marks.since(&b), 0);
    }
}
