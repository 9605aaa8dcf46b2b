//! Counted slots per key: how many requests one application, or connections
//! one address, may hold at once. A slot is given back when its guard drops.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// At most `max` slots per key.
pub struct Slots<K: Hash + Eq + Clone> {
    max: usize,
    used: Arc<Mutex<HashMap<K, usize>>>,
}

/// One slot, held until dropped.
pub struct Slot<K: Hash + Eq + Clone> {
    key: K,
    used: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// `max` slots per key.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: Arc::default(),
        }
    }

    /// A slot for `key`, or `None` if it holds `max` already.
    pub fn try_acquire(&self, key: &K) -> Option<Slot<K>> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let n = used.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key: key.clone(),
            used: Arc::clone(&self.used),
        })
    }

    /// The most one key may hold.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = used.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                used.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_max_slots_and_gets_them_back() {
        let slots = Slots::new(2);
        let a1 = slots.try_acquire(&"a").expect("first");
        let _a2 = slots.try_acquire(&"a").expect("second");
        assert!(slots.try_acquire(&"a").is_none(), "the third is refused");
        assert!(slots.try_acquire(&"b").is_some(), "another key is not");
        drop(a1);
        assert!(
            slots.try_acquire(&"a").is_some(),
            "a dropped slot is free again"
        );
        assert!(
            slots.used.lock().unwrap().get("b").is_none(),
            "no entry is kept for idle keys"
        );
    }
}
