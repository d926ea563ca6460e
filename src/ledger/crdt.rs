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

/// Grow-only set kept as a sorted vector of exactly its elements.
///
/// A task's sets hold one to a few elements each, for every task a farm has
/// ever run: a `BTreeSet` allocates a node for eleven on its first insert
/// (some 500 bytes for one claim), this allocates room for what it holds.
/// Inserting is O(n), which is nothing at these sizes. It encodes as a
/// sequence in order, as a `BTreeSet` does, so records on disk and on the
/// wire are the same bytes; decoding sorts and drops duplicates, so a peer's
/// out-of-order or repeated elements give the same set everywhere.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GSet<T>(Vec<T>);

impl<T> Default for GSet<T> {
    fn default() -> Self {
        GSet(Vec::new())
    }
}

impl<T: Ord> GSet<T> {
    pub fn new() -> GSet<T> {
        GSet::default()
    }

    /// Add `x`; true if it was not there.
    pub fn insert(&mut self, x: T) -> bool {
        match self.0.binary_search(&x) {
            Ok(_) => false,
            Err(at) => {
                // Exact room while small (the usual set holds one to three);
                // amortized growth beyond, so a large one is not copied
                // whole on every insert.
                if self.0.len() < EXACT_UP_TO {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, x);
                true
            }
        }
    }

    pub fn contains(&self, x: &T) -> bool {
        self.0.binary_search(x).is_ok()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The smallest element.
    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }

    /// The greatest element.
    pub fn last(&self) -> Option<&T> {
        self.0.last()
    }

    /// Keep only the elements `keep` says yes to: for filtering a copy
    /// before it is merged (a replica's own sets only grow).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.0.retain(keep);
        self.0.shrink_to_fit();
    }
}

impl<T: Ord> FromIterator<T> for GSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v: Vec<T> = iter.into_iter().collect();
        v.sort();
        v.dedup();
        v.shrink_to_fit();
        GSet(v)
    }
}

impl<T: Ord, const N: usize> From<[T; N]> for GSet<T> {
    fn from(xs: [T; N]) -> Self {
        xs.into_iter().collect()
    }
}

impl<'a, T> IntoIterator for &'a GSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> IntoIterator for GSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for GSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(&self.0).finish()
    }
}

impl<T: Serialize> Serialize for GSet<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.0)
    }
}

impl<'de, T: Deserialize<'de> + Ord> Deserialize<'de> for GSet<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<T>::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

/// Sets up to this many elements grow by exactly one element at a time.
const EXACT_UP_TO: usize = 16;

impl<T: Ord + Clone> Crdt for GSet<T> {
    /// A few elements are inserted one by one; more are merged in one pass
    /// over both sorted vectors, so a peer's large set costs linear time,
    /// not an insert (and a shift) per element.
    fn merge(&mut self, other: &Self) -> bool {
        if other.0.len() <= 4 {
            let mut changed = false;
            for x in other {
                if !self.contains(x) {
                    changed |= self.insert(x.clone());
                }
            }
            return changed;
        }
        let mine = std::mem::take(&mut self.0);
        let before = mine.len();
        let mut out = Vec::with_capacity(before + other.0.len());
        let mut theirs = other.0.iter().peekable();
        for x in mine {
            while let Some(y) = theirs.next_if(|y| *y < &x) {
                out.push(y.clone());
            }
            theirs.next_if(|y| *y == &x);
            out.push(x);
        }
        out.extend(theirs.cloned());
        out.shrink_to_fit();
        self.0 = out;
        self.0.len() != before
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
        fn gset_laws(a: Vec<u8>, b: Vec<u8>, c: Vec<u8>) {
            laws(GSet::from_iter(a), GSet::from_iter(b), GSet::from_iter(c))
        }

        /// The same elements as a `BTreeSet`, in the same order, and the
        /// same bytes on the wire, whatever order they were inserted in.
        #[test]
        fn gset_is_a_btreeset_in_a_vector(xs: Vec<u16>) {
            let mut g = GSet::new();
            for &x in &xs {
                g.insert(x);
            }
            let b: BTreeSet<u16> = xs.iter().copied().collect();
            prop_assert!(g.iter().eq(b.iter()));
            prop_assert_eq!(g.len(), b.len());
            prop_assert_eq!(g.first(), b.first());
            prop_assert_eq!(g.last(), b.last());
            prop_assert_eq!(postcard::to_allocvec(&g).unwrap(), postcard::to_allocvec(&b).unwrap());
            prop_assert_eq!(postcard::from_bytes::<GSet<u16>>(&postcard::to_allocvec(&b).unwrap()).unwrap(), g.clone());
            for x in &xs {
                prop_assert!(g.contains(x));
            }
        }

        /// Merging, one by one or in one pass, is a `BTreeSet`'s union.
        #[test]
        fn gset_merge_is_union(a: Vec<u8>, b: Vec<u8>) {
            let mut g = GSet::from_iter(a.iter().copied());
            let changed = g.merge(&GSet::from_iter(b.iter().copied()));
            let mut u: BTreeSet<u8> = a.iter().copied().collect();
            let grew = u.merge(&b.iter().copied().collect());
            prop_assert!(g.iter().eq(u.iter()));
            prop_assert_eq!(changed, grew);
        }
    }

    #[test]
    fn a_gset_decoded_out_of_order_with_repeats_is_sorted_and_whole() {
        let bytes = postcard::to_allocvec(&vec![3u8, 1, 3, 2, 1]).unwrap();
        let g: GSet<u8> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(g, GSet::from([1, 2, 3]));
    }

    proptest! {
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
