//! The log's newest events, kept in memory as they were written, for the
//! readers that follow the log's head.
//!
//! A subscription (placement's feed above all) reads back every event just
//! after it is written. From RocksDB that is two lookups per event, the
//! position's key in `log`, then the record in `events`: on the compute
//! benchmark about a ninth of the server's main thread. The writer already
//! holds each round's sealed records in position order, so it hands a copy
//! over when it publishes the round, and a read that starts within the
//! rounds kept is served from here. The bytes are the very records written
//! to RocksDB, checksum included, and are unsealed the same way.
//!
//! Only published rounds come here, in order, so what is kept is always a
//! run of consecutive positions ending at or past the visible head; a round
//! that cannot be shown whole (one with imported events) empties it, and
//! reads below what is kept go to RocksDB as before.

use std::collections::VecDeque;

/// Bytes of sealed records kept: about a quarter of a million small events.
/// A subscription falls far behind while a large job is added: on the
/// dispatch benchmark (200,000 tasks added in under 3 s while they run)
/// placement's feed trailed the head by 70,000 - 220,000 events, past the
/// 8 MiB kept before, and then read each event back from RocksDB.
pub(super) const RECENT_BYTES_MAX: usize = 32 << 20;

/// One round's sealed records, back to back, in position order.
#[derive(Debug, Default)]
pub(super) struct RecentRound {
    /// Position of the first record.
    pub first: u64,
    pub bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    pub ends: Vec<u32>,
}

impl RecentRound {
    fn last(&self) -> u64 {
        self.first + self.ends.len() as u64 - 1
    }

    fn record(&self, index: usize) -> &[u8] {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.bytes[start..self.ends[index] as usize]
    }
}

#[derive(Debug, Default)]
pub(super) struct Recent {
    rounds: VecDeque<RecentRound>,
    bytes: usize,
}

impl Recent {
    /// A published round that wrote `events` events: its records, or None
    /// when they cannot be shown whole.
    pub fn publish(&mut self, events: u64, round: Option<RecentRound>) {
        if events == 0 {
            return;
        }
        let Some(round) = round.filter(|r| r.ends.len() as u64 == events) else {
            self.clear();
            return;
        };
        let follows = self
            .rounds
            .back()
            .is_none_or(|r| r.last() + 1 == round.first);
        if !follows {
            self.clear();
        }
        self.bytes += round.bytes.len();
        self.rounds.push_back(round);
        while self.bytes > RECENT_BYTES_MAX && self.rounds.len() > 1 {
            if let Some(old) = self.rounds.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
    }

    pub fn clear(&mut self) {
        self.rounds.clear();
        self.bytes = 0;
    }

    /// The records at positions `from..=to`, in order, if `from` is kept;
    /// fewer when the kept rounds end before `to`.
    pub fn read(&self, from: u64, to: u64) -> Option<Vec<(u64, &[u8])>> {
        let first = self.rounds.front()?.first;
        if from < first || from > to {
            return None;
        }
        // Rounds are consecutive: the one holding `from` is found by
        // position.
        let at = self.rounds.partition_point(|r| r.last() < from);
        let mut out = Vec::with_capacity((to - from + 1).min(1024) as usize);
        let mut position = from;
        for round in self.rounds.range(at..) {
            while position <= to && position <= round.last() {
                out.push((position, round.record((position - round.first) as usize)));
                position += 1;
            }
            if position > to {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(first: u64, records: &[&str]) -> RecentRound {
        let mut r = RecentRound {
            first,
            ..RecentRound::default()
        };
        for rec in records {
            r.bytes.extend_from_slice(rec.as_bytes());
            r.ends.push(r.bytes.len() as u32);
        }
        r
    }

    fn texts(read: Option<Vec<(u64, &[u8])>>) -> Vec<(u64, String)> {
        read.unwrap_or_default()
            .into_iter()
            .map(|(p, b)| (p, String::from_utf8(b.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn reads_span_rounds_and_stop_at_what_is_asked_or_kept() {
        let mut recent = Recent::default();
        assert!(recent.read(1, 5).is_none(), "nothing kept yet");
        recent.publish(2, Some(round(1, &["a", "bb"])));
        recent.publish(0, None);
        recent.publish(3, Some(round(3, &["c", "", "eee"])));
        assert_eq!(
            texts(recent.read(2, 4)),
            vec![(2, "bb".into()), (3, "c".into()), (4, "".into())]
        );
        // Past the last kept: what there is.
        assert_eq!(texts(recent.read(5, 9)), vec![(5, "eee".into())]);
        assert!(recent.read(6, 9).is_none());
        assert!(recent.read(3, 2).is_none());
    }

    #[test]
    fn a_round_that_cannot_be_shown_whole_or_does_not_follow_empties_it() {
        let mut recent = Recent::default();
        recent.publish(2, Some(round(1, &["a", "b"])));
        // An import's events are not in the round's records.
        recent.publish(3, None);
        assert!(recent.read(1, 2).is_none());
        recent.publish(1, Some(round(6, &["f"])));
        // A count that disagrees with the records.
        recent.publish(2, Some(round(7, &["g"])));
        assert!(recent.read(6, 6).is_none());
        recent.publish(1, Some(round(8, &["h"])));
        // A gap: what came before is dropped, not read across.
        recent.publish(1, Some(round(10, &["j"])));
        assert!(recent.read(8, 10).is_none());
        assert_eq!(texts(recent.read(10, 10)), vec![(10, "j".into())]);
    }

    #[test]
    fn the_oldest_rounds_go_past_the_byte_bound() {
        let mut recent = Recent::default();
        let big = "x".repeat(RECENT_BYTES_MAX / 4 + 1);
        for n in 0..8u64 {
            recent.publish(1, Some(round(n + 1, &[&big])));
        }
        assert!(recent.bytes <= RECENT_BYTES_MAX);
        assert!(recent.read(1, 1).is_none(), "the first rounds are gone");
        assert_eq!(recent.read(8, 8).unwrap().len(), 1, "the last is kept");
    }
}
