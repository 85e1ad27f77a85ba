//! Connections that have not authenticated yet (no signed call has
//! verified), bounded in all and per source address. Past a bound the
//! oldest waiting connection is closed to make room, never the new one:
//! a flood of idle sockets cannot lock out a client that connects and
//! signs a call at once, and one address's flood closes only its own.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use tokio::sync::Notify;

pub struct Gate {
    max: usize,
    per_source_max: usize,
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Waiting connections, oldest first.
    waiting: BTreeMap<u64, (IpAddr, Rc<Slot>)>,
    per_source: HashMap<IpAddr, usize>,
}

/// Why a waiting connection was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Its address had too many connections waiting.
    Source,
    /// The server had too many connections waiting.
    All,
}

#[derive(Default)]
struct Slot {
    evicted: Notify,
    why: Cell<Option<Evicted>>,
}

/// A connection's place at the gate; dropping it (authenticated, or
/// closed) frees the place.
pub struct Waiting {
    gate: Rc<Gate>,
    id: u64,
    slot: Rc<Slot>,
}

impl Gate {
    pub fn new(max: usize, per_source_max: usize) -> Rc<Self> {
        Rc::new(Gate {
            max: max.max(1),
            per_source_max: per_source_max.max(1),
            inner: RefCell::default(),
        })
    }

    /// How many connections wait now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.inner.borrow().waiting.len()
    }

    /// A new connection from `source` waits to authenticate; past a bound
    /// the oldest of its address, or else the oldest of all, is closed.
    pub fn enter(self: &Rc<Self>, source: IpAddr) -> Waiting {
        let slot = Rc::new(Slot::default());
        let mut inner = self.inner.borrow_mut();
        let id = inner.next;
        inner.next += 1;
        inner.waiting.insert(id, (source, slot.clone()));
        *inner.per_source.entry(source).or_default() += 1;
        let victim = if inner.per_source[&source] > self.per_source_max {
            inner
                .waiting
                .iter()
                .find(|(_, (ip, _))| *ip == source)
                .map(|(id, _)| (*id, Evicted::Source))
        } else if inner.waiting.len() > self.max {
            inner.waiting.keys().next().map(|id| (*id, Evicted::All))
        } else {
            None
        };
        drop(inner);
        if let Some((victim, why)) = victim {
            if let Some(slot) = self.remove(victim) {
                slot.why.set(Some(why));
                slot.evicted.notify_one();
            }
        }
        Waiting {
            gate: self.clone(),
            id,
            slot,
        }
    }

    fn remove(&self, id: u64) -> Option<Rc<Slot>> {
        let mut inner = self.inner.borrow_mut();
        let (source, slot) = inner.waiting.remove(&id)?;
        if let Some(n) = inner.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                inner.per_source.remove(&source);
            }
        }
        Some(slot)
    }
}

impl Waiting {
    /// Resolves when this connection is closed to make room, with why.
    pub async fn evicted(&self) -> Evicted {
        self.slot.evicted.notified().await;
        self.slot.why.get().unwrap_or(Evicted::All)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.gate.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_oldest_waiting_connection_makes_room_and_one_address_evicts_only_its_own() {
        let gate = Gate::new(3, 2);
        let a1 = gate.enter(ip(1));
        let b1 = gate.enter(ip(2));
        let a2 = gate.enter(ip(1));
        assert_eq!(gate.waiting(), 3);
        // A third from address 1: its own oldest goes, not b1.
        let a3 = gate.enter(ip(1));
        assert_eq!(a1.evicted().await, Evicted::Source);
        assert_eq!(gate.waiting(), 3);
        // A new address past the total: the oldest of all (b1) goes.
        let c1 = gate.enter(ip(3));
        assert_eq!(b1.evicted().await, Evicted::All);
        assert_eq!(gate.waiting(), 3);
        // Authenticated (dropped): its place is free.
        drop(a2);
        assert_eq!(gate.waiting(), 2);
        let _c2 = gate.enter(ip(3));
        assert_eq!(gate.waiting(), 3);
        drop((a3, c1, a1, b1));
        assert_eq!(gate.waiting(), 1);
    }
}
