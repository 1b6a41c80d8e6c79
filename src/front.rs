//! A per-thread copy in front of a shared map, so that the hot path of a
//! call writes no memory another core reads.
//!
//! The remembered tokens and the cached accounts and sessions are shared
//! maps behind a mutex, with a least-recently-used order. A hit there
//! takes the lock, moves the entry to the front of the order and adds one
//! to the entry's reference count: three writes to cache lines the other
//! workers write too, and with many connections of one user (a service
//! account, a benchmark) every call passes those lines from core to core.
//! A `perf` profile of get_caller at the default settings put about 4.4 %
//! of the server's time there.
//!
//! A [`Front`] keeps, per thread, a few dozen entries of its owner's map,
//! each a private copy (its own `Arc`, so its reference count stays on the
//! thread), tagged with the owner's *generation* when the entry was read.
//! The owner adds one to its generation after every change that removes or
//! replaces an entry of the shared map ([`Front::invalidate`]); an entry is
//! used only while the generation is the one it was read under. So a
//! change that has returned is seen by the next lookup on every thread,
//! the same guarantee the shared map gives.
//!
//! The order of operations that makes this exact: a lookup reads the
//! generation *before* it reads the shared map and tags what it read with
//! that generation; the owner changes the shared map *before* it adds to
//! the generation. A read that saw the old value therefore carries a
//! generation that the change makes stale.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries per thread and owner type: enough for the users of the
/// connections one worker serves at a time; a miss costs one lookup of the
/// shared map.
const SLOTS: usize = 64;

/// The owner side: an identity (so that two maps never answer for each
/// other on a thread) and the generation.
#[derive(Debug)]
pub(crate) struct Front {
    id: u64,
    generation: AtomicU64,
}

impl Default for Front {
    fn default() -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Front {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }
    }
}

impl Front {
    /// Read before the shared map is read; the tag of what is read there.
    pub(crate) fn generation(&self) -> Generation {
        Generation {
            owner: self.id,
            value: self.generation.load(Ordering::Acquire),
        }
    }

    /// Makes every per-thread copy stale: called after the shared map
    /// changed (an entry removed, replaced or cleared). An owner that also
    /// fills its map from slower reads may call it before the change too,
    /// and keep such a read only if the generation read before it still
    /// holds (the cached store does).
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A generation read from a [`Front`] (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Generation {
    owner: u64,
    value: u64,
}

/// One thread's copies of one type of entry, direct-mapped by key.
pub(crate) struct Slots<V> {
    entries: Vec<Option<Slot<V>>>,
    hasher: foldhash::fast::FixedState,
}

struct Slot<V> {
    generation: Generation,
    key: Box<str>,
    value: V,
}

impl<V: Clone> Default for Slots<V> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl<V: Clone> Slots<V> {
    fn index(&self, generation: Generation, key: &str) -> usize {
        let hash = self.hasher.hash_one((generation.owner, key));
        // SLOTS is a power of two and the hash's high bits are its best.
        (hash >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// The copy of `key` read under `generation`, if this thread has it.
    pub(crate) fn get(&self, generation: Generation, key: &str) -> Option<V> {
        let slot = self.entries.get(self.index(generation, key))?.as_ref()?;
        (slot.generation == generation && *slot.key == *key).then(|| slot.value.clone())
    }

    /// Keeps `value`, read under `generation`, as this thread's copy of
    /// `key` (replacing whatever shared its slot).
    pub(crate) fn put(&mut self, generation: Generation, key: &str, value: V) {
        if self.entries.is_empty() {
            self.entries.resize_with(SLOTS, || None);
        }
        let index = self.index(generation, key);
        self.entries[index] = Some(Slot {
            generation,
            key: key.into(),
            value,
        });
    }
}

/// Looks `key` up in this thread's `slots` under `generation`; on a miss,
/// `read` answers (from the shared map) and a private copy of its answer
/// (made by `copy`) is kept and returned. `None` from `read` keeps nothing.
pub(crate) fn through<V: Clone + 'static>(
    slots: &'static std::thread::LocalKey<RefCell<Slots<V>>>,
    generation: Generation,
    key: &str,
    read: impl FnOnce() -> Option<V>,
    copy: impl FnOnce(&V) -> V,
) -> Option<V> {
    let cached = slots
        .try_with(|slots| slots.try_borrow().ok()?.get(generation, key))
        .ok()
        .flatten();
    if cached.is_some() {
        return cached;
    }
    let shared = read()?;
    let private = copy(&shared);
    // A thread that is ending, or a lookup inside a lookup, keeps nothing.
    let _ = slots.try_with(|slots| {
        if let Ok(mut slots) = slots.try_borrow_mut() {
            slots.put(generation, key, private.clone());
        }
    });
    Some(private)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TEST: RefCell<Slots<u32>> = RefCell::default();
    }

    #[test]
    fn a_copy_is_used_until_its_owner_changes() {
        let front = Front::default();
        let mut reads = 0;
        let mut look = |front: &Front, value: u32| {
            through(
                &TEST,
                front.generation(),
                "alice",
                || {
                    reads += 1;
                    Some(value)
                },
                |v| *v,
            )
        };
        assert_eq!(look(&front, 1), Some(1));
        assert_eq!(look(&front, 2), Some(1), "the copy answers");
        front.invalidate();
        assert_eq!(look(&front, 3), Some(3), "a change makes it stale");
        let other = Front::default();
        assert_eq!(look(&other, 4), Some(4), "another owner's copy is not used");
        assert_eq!(reads, 3);
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept_for_later() {
        let front = Front::default();
        // Read the generation, then the (old) shared value ...
        let before = front.generation();
        // ... while a change lands and is announced.
        front.invalidate();
        assert_eq!(through(&TEST, before, "bob", || Some(1), |v| *v), Some(1));
        // The next lookup does not take the old value.
        assert_eq!(
            through(&TEST, front.generation(), "bob", || Some(2), |v| *v),
            Some(2)
        );
    }

    #[test]
    fn nothing_is_kept_for_a_key_the_map_does_not_have() {
        let front = Front::default();
        assert_eq!(
            through(&TEST, front.generation(), "carol", || None, |v| *v),
            None
        );
        assert_eq!(
            through(&TEST, front.generation(), "carol", || Some(5), |v| *v),
            Some(5)
        );
    }
}
