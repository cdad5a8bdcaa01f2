//! Maglev's lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4), weighted: each member fills the table's slots along a
//! permutation of its own, taking turns in proportion to its weight, so that every member owns
//! about its share of the slots and a change of members moves few of them.

/// A Maglev table over members `0..n`: `lookup` maps a key's hash to a member.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    /// Each slot's member.
    slots: Vec<u32>,
    /// How many members filled it.
    members: usize,
}

/// One member's walk over the slots: its permutation is `offset + j × skip (mod size)`.
struct Walk {
    offset: u64,
    skip: u64,
    /// How far along its permutation it is.
    next: u64,
    /// Slots taken, and the turns its weight has earned.
    taken: u64,
    weight: u64,
}

impl Table {
    /// The table of `size` slots (a prime, larger than the number of members) over members of
    /// the given `(hash, weight)`s, in their order: a member's index is its position there.
    /// Members of weight 0 take no slot; with no member of weight above 0, the table is empty.
    pub(crate) fn build(members: &[(u64, u32)], size: usize) -> Self {
        let max_weight = members
            .iter()
            .map(|&(_, w)| u64::from(w))
            .max()
            .unwrap_or(0);
        if size == 0 || max_weight == 0 {
            return Self::default();
        }
        let m = size as u64;
        let mut walks: Vec<Walk> = members
            .iter()
            .map(|&(hash, weight)| {
                let (h1, h2) = (mix(hash), mix(hash ^ 0x5851_f42d_4c95_7f2d));
                Walk {
                    offset: h1 % m,
                    skip: h2 % (m - 1) + 1,
                    next: 0,
                    taken: 0,
                    weight: u64::from(weight),
                }
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut slots = vec![EMPTY; size];
        let mut filled = 0;
        let mut round = 0u64;
        'fill: loop {
            round += 1;
            for (index, walk) in walks.iter_mut().enumerate() {
                // Turns earned by this round, in proportion to the weight (the heaviest member
                // takes one a round).
                let earned = round * walk.weight / max_weight;
                while walk.taken < earned {
                    let slot = loop {
                        let slot = (walk.offset + walk.next * walk.skip) % m;
                        walk.next += 1;
                        if slots[slot as usize] == EMPTY {
                            break slot as usize;
                        }
                    };
                    slots[slot] = index as u32;
                    walk.taken += 1;
                    filled += 1;
                    if filled == size {
                        break 'fill;
                    }
                }
            }
        }
        Self {
            slots,
            members: members.len(),
        }
    }

    /// The member `hash` maps to, if the table has any.
    pub(crate) fn lookup(&self, hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = (hash % self.slots.len() as u64) as usize;
        Some(self.slots[slot] as usize)
    }

    /// The members in the order a key of `hash` tries them: its own first, then each member
    /// the first time it is met on the slots after the key's, so that a key whose member is
    /// unready or full goes to the same next member every time.
    pub(crate) fn sequence(&self, hash: u64) -> Sequence<'_> {
        let start = if self.slots.is_empty() {
            0
        } else {
            (hash % self.slots.len() as u64) as usize
        };
        Sequence {
            table: self,
            start,
            step: 0,
            seen: Seen::new(self.members),
        }
    }

    /// How many slots each member owns, for tests and metrics.
    #[cfg(test)]
    fn shares(&self) -> Vec<usize> {
        let mut shares = vec![0; self.members];
        for &member in &self.slots {
            shares[member as usize] += 1;
        }
        shares
    }
}

/// The members a key tries, in order: see [`Table::sequence`].
pub(crate) struct Sequence<'a> {
    table: &'a Table,
    start: usize,
    step: usize,
    seen: Seen,
}

impl Iterator for Sequence<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let slots = &self.table.slots;
        while self.step < slots.len() && !self.seen.all() {
            let slot = (self.start + self.step) % slots.len();
            self.step += 1;
            let member = slots[slot] as usize;
            if self.seen.insert(member) {
                return Some(member);
            }
        }
        None
    }
}

/// The members met so far: a bit set, on the stack for up to 128 members.
enum Seen {
    Small { bits: u128, left: usize },
    Large { bits: Vec<u64>, left: usize },
}

impl Seen {
    fn new(members: usize) -> Self {
        if members <= 128 {
            Seen::Small {
                bits: 0,
                left: members,
            }
        } else {
            Seen::Large {
                bits: vec![0; members.div_ceil(64)],
                left: members,
            }
        }
    }

    fn all(&self) -> bool {
        match self {
            Seen::Small { left, .. } | Seen::Large { left, .. } => *left == 0,
        }
    }

    /// Whether `member` is met for the first time.
    fn insert(&mut self, member: usize) -> bool {
        let (new, left) = match self {
            Seen::Small { bits, left } => {
                let bit = 1u128 << member;
                let new = *bits & bit == 0;
                *bits |= bit;
                (new, left)
            }
            Seen::Large { bits, left } => {
                let (word, bit) = (member / 64, 1u64 << (member % 64));
                let new = bits[word] & bit == 0;
                bits[word] |= bit;
                (new, left)
            }
        };
        if new {
            *left -= 1;
        }
        new
    }
}

/// Spreads a hash's bits, so that the two walks of a member differ.
use crate::splitmix64 as mix;

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 65_537;

    fn members(n: u64) -> Vec<(u64, u32)> {
        (0..n).map(|i| (mix(i * 7 + 1), 1)).collect()
    }

    #[test]
    fn every_member_owns_about_its_share() {
        let table = Table::build(&members(100), SIZE);
        let shares = table.shares();
        let mean = SIZE as f64 / 100.0;
        for share in shares {
            assert!((share as f64 - mean).abs() <= 1.0, "{share} against {mean}");
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let weighted: Vec<(u64, u32)> = (0..10u64).map(|i| (mix(i), i as u32 % 3 + 1)).collect();
        let table = Table::build(&weighted, SIZE);
        let total: u32 = weighted.iter().map(|&(_, w)| w).sum();
        for (member, share) in table.shares().into_iter().enumerate() {
            let expected = SIZE as f64 * f64::from(weighted[member].1) / f64::from(total);
            assert!(
                (share as f64 - expected).abs() / expected < 0.01,
                "member {member}: {share} against {expected:.0}"
            );
        }
    }

    #[test]
    fn removing_a_member_moves_little_more_than_its_own_keys() {
        let all = members(100);
        let before = Table::build(&all, SIZE);
        let fewer: Vec<_> = all[1..].to_vec();
        let after = Table::build(&fewer, SIZE);
        // A key moves if its member changed (member i is i - 1 after the removal).
        let moved = (0..SIZE as u64)
            .filter(|&slot| {
                let was = before.lookup(slot).unwrap();
                let now = after.lookup(slot).unwrap() + 1;
                was != now
            })
            .count();
        let share = moved as f64 / SIZE as f64;
        assert!(share <= 0.01 + 0.02, "{share}");
    }

    #[test]
    fn a_sequence_meets_every_member_once_starting_with_the_keys_own() {
        let table = Table::build(&members(20), SIZE);
        for hash in [0, 1, 12_345, u64::MAX] {
            let order: Vec<usize> = table.sequence(hash).collect();
            assert_eq!(order[0], table.lookup(hash).unwrap());
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..20).collect::<Vec<_>>());
            assert_eq!(order, table.sequence(hash).collect::<Vec<_>>(), "stable");
        }
        assert_eq!(Table::build(&[], SIZE).lookup(3), None);
        assert_eq!(Table::build(&[], SIZE).sequence(3).next(), None);
    }
}
