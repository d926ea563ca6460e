//! The lattice primitives a ledger record is built from.
//!
//! One trait, [`Crdt`], with one operation, `merge`, obeying three laws for
//! all `a`, `b`, `c`:
//!
//! - commutative: `a ⊔ b = b ⊔ a`
//! - associative: `(a ⊔ b) ⊔ c = a ⊔ (b ⊔ c)`
//! - idempotent:  `a ⊔ a = a`
//!
//! Together they mean replicas converge whatever order, duplication or
//! delay the network gives their updates. The laws are property-tested for
//! every type here and for whole records (`tests/it/ledger_laws.rs`), which
//! Garage, the model for this shape, never did. `merge` reports whether it
//! changed `self`, so a node persists and re-gossips only what is new.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::Stamp;

/// A join-semilattice.
pub trait Crdt {
    /// Join `other` into `self`; true if `self` changed.
    fn merge(&mut self, other: &Self) -> bool;
}

/// Last-writer-wins register: the value with the greatest stamp. Two honest
/// writes never share a stamp; if forged ones do, the greater value wins so
/// the result is still deterministic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
pub struct Lww<T> {
    pub stamp: Stamp,
    pub value: T,
}

impl<T> Lww<T> {
    pub fn new(stamp: Stamp, value: T) -> Lww<T> {
        Lww { stamp, value }
    }
}

impl<T: Ord + Clone> Crdt for Lww<T> {
    fn merge(&mut self, other: &Self) -> bool {
        if (&other.stamp, &other.value) > (&self.stamp, &self.value) {
            self.stamp = other.stamp.clone();
            self.value = other.value.clone();
            true
        } else {
            false
        }
    }
}

/// Max-register.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
#[serde(transparent)]
pub struct Max<T>(pub T);

impl<T: Ord + Copy> Crdt for Max<T> {
    fn merge(&mut self, other: &Self) -> bool {
        if other.0 > self.0 {
            self.0 = other.0;
            true
        } else {
            false
        }
    }
}

/// Min-register: the smallest value wins (the earliest report of an event).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
#[serde(transparent)]
pub struct Min<T>(pub T);

impl<T: Ord + Clone> Crdt for Min<T> {
    fn merge(&mut self, other: &Self) -> bool {
        if other.0 < self.0 {
            self.0 = other.0.clone();
            true
        } else {
            false
        }
    }
}

/// A flag that, once set, stays set (cancel, archive).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug, Default)]
#[serde(transparent)]
pub struct Flag(pub bool);

impl Crdt for Flag {
    fn merge(&mut self, other: &Self) -> bool {
        let changed = other.0 && !self.0;
        self.0 |= other.0;
        changed
    }
}

/// Grow-only set: union.
impl<T: Ord + Clone> Crdt for BTreeSet<T> {
    fn merge(&mut self, other: &Self) -> bool {
        let before = self.len();
        for x in other {
            if !self.contains(x) {
                self.insert(x.clone());
            }
        }
        self.len() != before
    }
}

/// Map of lattices: keys union, values merged.
impl<K: Ord + Clone, V: Crdt + Clone> Crdt for BTreeMap<K, V> {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for (k, v) in other {
            match self.get_mut(k) {
                Some(mine) => changed |= mine.merge(v),
                None => {
                    self.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::types::NodeId;
    use proptest::prelude::*;

    fn laws<T: Crdt + Clone + PartialEq + std::fmt::Debug>(a: T, b: T, c: T) {
        let join = |x: &T, y: &T| {
            let mut z = x.clone();
            z.merge(y);
            z
        };
        assert_eq!(join(&a, &b), join(&b, &a), "commutative");
        assert_eq!(
            join(&join(&a, &b), &c),
            join(&a, &join(&b, &c)),
            "associative"
        );
        assert_eq!(join(&a, &a), a, "idempotent");
        let mut again = join(&a, &b);
        assert!(
            !again.merge(&b),
            "merging what is already in reports no change"
        );
    }

    fn lww() -> impl Strategy<Value = Lww<u8>> {
        (0u64..4, 0u8..3, 0u8..4).prop_map(|(l, n, v)| Lww {
            stamp: Stamp {
                lamport: l,
                node: NodeId::new(format!("n{n}")),
            },
            value: v,
        })
    }

    proptest! {
        #[test]
        fn lww_laws(a in lww(), b in lww(), c in lww()) { laws(a, b, c) }

        #[test]
        fn max_laws(a: u8, b: u8, c: u8) { laws(Max(a), Max(b), Max(c)) }

        #[test]
        fn min_laws(a: u8, b: u8, c: u8) { laws(Min(a), Min(b), Min(c)) }

        #[test]
        fn flag_laws(a: bool, b: bool, c: bool) { laws(Flag(a), Flag(b), Flag(c)) }

        #[test]
        fn set_laws(a: BTreeSet<u8>, b: BTreeSet<u8>, c: BTreeSet<u8>) { laws(a, b, c) }

        #[test]
        fn map_laws(a: BTreeMap<u8, Max<u8>>, b: BTreeMap<u8, Max<u8>>, c: BTreeMap<u8, Max<u8>>) {
            laws(a, b, c)
        }
    }

    impl Arbitrary for Max<u8> {
        type Parameters = ();
        type Strategy = BoxedStrategy<Max<u8>>;
        fn arbitrary_with(_: ()) -> Self::Strategy {
            any::<u8>().prop_map(Max).boxed()
        }
    }
}
