//! Deterministic subsetting: balance over a fleet, stability under membership changes, order
//! independence, and the discovery adapter.

use futures_util::stream::{self, Stream};
use portcullis_p2c::subset::{Subset, SubsetDiscovery};
use portcullis_p2c::BuildError;
use portcullis_pool::Update;
use rand::rngs::SmallRng;
use rand::seq::{index, SliceRandom};
use rand::Rng;
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::task::Poll;
use tokio::sync::mpsc;
use tokio_test::{assert_pending, assert_ready, task};

const SERVERS: u32 = 1_000;
const CLIENTS: u64 = 1_000;
const SIZE: usize = 20;

fn subset(client_id: u64, size: usize) -> Subset {
    match Subset::new(client_id, size) {
        Ok(subset) => subset,
        Err(error) => panic!("{error}"),
    }
}

/// Server keys that do not sort like their number, as addresses would not.
fn server(i: u32) -> String {
    format!("10.{}.{}.{}:8080", i % 7, i % 251, i)
}

fn fleet(n: u32) -> Vec<String> {
    (0..n).map(server).collect()
}

fn subsets_of(keys: &[String]) -> Vec<BTreeSet<String>> {
    (0..CLIENTS)
        .map(|client| {
            subset(client, SIZE)
                .select(keys)
                .into_iter()
                .cloned()
                .collect()
        })
        .collect()
}

/// max, mean, min of the number of clients per server.
fn spread<'a>(
    keys: &[String],
    subsets: impl IntoIterator<Item = &'a BTreeSet<String>>,
) -> (usize, f64, usize) {
    let mut clients = std::collections::BTreeMap::<&str, usize>::new();
    for key in keys {
        clients.insert(key, 0);
    }
    for set in subsets {
        for key in set {
            *clients.get_mut(key.as_str()).expect("a key of the fleet") += 1;
        }
    }
    let max = clients.values().copied().max().unwrap_or(0);
    let min = clients.values().copied().min().unwrap_or(0);
    let mean = clients.values().sum::<usize>() as f64 / keys.len() as f64;
    (max, mean, min)
}

#[test]
fn every_server_gets_about_the_same_number_of_clients() {
    let keys = fleet(SERVERS);
    let subsets = subsets_of(&keys);
    for set in &subsets {
        assert_eq!(set.len(), SIZE);
    }
    let (max, mean, min) = spread(&keys, &subsets);

    let mut rng = SmallRng::seed_from_u64(17);
    let random: Vec<BTreeSet<String>> = (0..CLIENTS)
        .map(|_| {
            index::sample(&mut rng, keys.len(), SIZE)
                .into_iter()
                .map(|i| keys[i].clone())
                .collect()
        })
        .collect();
    let (rmax, rmean, rmin) = spread(&keys, &random);
    eprintln!(
        "clients per server, {SERVERS} servers, {CLIENTS} clients, subsets of {SIZE}: \
         deterministic max {max} mean {mean:.2} min {min} (max/mean {:.3}); \
         random max {rmax} mean {rmean:.2} min {rmin} (max/mean {:.3})",
        max as f64 / mean,
        rmax as f64 / rmean,
    );
    assert_eq!(mean, 20.0);
    assert!(max as f64 / mean <= 1.2, "max {max} mean {mean}");
    assert!(min as f64 / mean >= 0.8, "min {min} mean {mean}");
}

#[test]
fn a_fleet_that_does_not_divide_evenly_is_still_balanced() {
    let keys = fleet(1_013);
    let subsets = subsets_of(&keys);
    let (max, mean, min) = spread(&keys, &subsets);
    eprintln!("1013 servers: max {max} mean {mean:.2} min {min}");
    assert!(max as f64 / mean <= 1.2, "max {max} mean {mean}");
    assert!(min as f64 / mean >= 0.8, "min {min} mean {mean}");
}

/// For each client, whether its subset differs, and by how many servers it lost.
fn changes(before: &[BTreeSet<String>], after: &[BTreeSet<String>]) -> (usize, usize) {
    let mut changed = 0;
    let mut worst = 0;
    for (old, new) in before.iter().zip(after) {
        if old != new {
            changed += 1;
            worst = worst.max(old.difference(new).count());
        }
    }
    (changed, worst)
}

/// The SRE book's algorithm, for comparison: shuffle per round, disjoint slices in a round.
fn sre_subsets(keys: &[String]) -> Vec<BTreeSet<String>> {
    let mut sorted = keys.to_vec();
    sorted.sort();
    let subset_count = (sorted.len() / SIZE).max(1) as u64;
    (0..CLIENTS)
        .map(|client| {
            let mut order = sorted.clone();
            order.shuffle(&mut SmallRng::seed_from_u64(client / subset_count));
            let start = (client % subset_count) as usize * SIZE;
            order[start..start + SIZE].iter().cloned().collect()
        })
        .collect()
}

#[test]
fn one_server_leaving_or_joining_moves_few_clients() {
    let keys = fleet(SERVERS);
    let before = subsets_of(&keys);
    let mut sorted = keys.clone();
    sorted.sort();

    // A server at the start, in the middle and at the end of the key order.
    for rank in [0, 250, 500, 999] {
        let gone = &sorted[rank];
        let rest: Vec<String> = keys.iter().filter(|k| *k != gone).cloned().collect();
        let after = subsets_of(&rest);
        let (changed, worst) = changes(&before, &after);
        let had_it = before.iter().filter(|set| set.contains(gone)).count();
        eprintln!(
            "removing the server of rank {rank}: {changed} of {CLIENTS} clients change subset \
             ({had_it} had it), each losing at most {worst} server(s)"
        );
        assert!(changed < CLIENTS as usize, "{changed} clients changed");
        assert!(changed >= had_it);
        // Each client loses one server: the removed one, or one at an end of its arc.
        assert!(worst <= 1, "a client lost {worst} servers");
        for (old, new) in before.iter().zip(&after) {
            assert!(!new.contains(gone));
            assert_eq!(new.len(), SIZE);
            if !old.contains(gone) && old != new {
                assert_eq!(old.difference(new).count(), 1);
            }
        }
    }

    for (name, joining) in [("a", "0.0.0.0:1"), ("b", "10.3.100.500:8080"), ("c", "9:9")] {
        let mut more = keys.clone();
        more.push(joining.to_string());
        let after = subsets_of(&more);
        let (changed, worst) = changes(&before, &after);
        let got_it = after.iter().filter(|set| set.contains(joining)).count();
        eprintln!(
            "adding server {name} ({joining}): {changed} of {CLIENTS} clients change subset \
             ({got_it} take it), each losing at most {worst} server(s)"
        );
        assert!(changed < CLIENTS as usize, "{changed} clients changed");
        assert!(worst <= 1, "a client lost {worst} servers");
    }

    // The SRE book's shuffle, for comparison only.
    let sre_before = sre_subsets(&keys);
    let rest: Vec<String> = keys
        .iter()
        .filter(|k| **k != sorted[500])
        .cloned()
        .collect();
    let (sre_changed, sre_worst) = changes(&sre_before, &sre_subsets(&rest));
    eprintln!(
        "SRE shuffle, removing the server of rank 500: {sre_changed} of {CLIENTS} clients \
         change subset, each losing up to {sre_worst} of {SIZE} servers"
    );
}

#[test]
fn the_subset_does_not_depend_on_the_order_of_discovery() {
    let keys = fleet(300);
    let mut shuffled = keys.clone();
    let mut rng = SmallRng::seed_from_u64(3);
    for client in 0..50 {
        shuffled.shuffle(&mut rng);
        let subset = subset(client, 7);
        assert_eq!(subset.select(&keys), subset.select(&shuffled));
        // A key listed twice counts once.
        let mut twice = shuffled.clone();
        twice.extend_from_slice(&shuffled[..20]);
        assert_eq!(subset.select(&keys), subset.select(&twice));
    }
}

#[test]
fn the_choice_is_pinned() {
    // The same on every version: a change here changes every client's subset in a fleet
    // running mixed versions.
    let keys: Vec<u32> = (0..10).collect();
    let picks: Vec<Vec<u32>> = (0..5)
        .map(|client| {
            subset(client, 3)
                .select(&keys)
                .into_iter()
                .copied()
                .collect()
        })
        .collect();
    assert_eq!(
        picks,
        [
            vec![0, 1, 2],
            vec![6, 7, 8],
            vec![2, 3, 4],
            vec![0, 8, 9],
            vec![4, 5, 6],
        ]
    );
}

#[test]
fn a_small_fleet_is_used_whole() {
    let keys = fleet(20);
    for client in 0..10 {
        let mut all: Vec<&String> = keys.iter().collect();
        all.sort();
        assert_eq!(subset(client, 20).select(&keys), all);
        assert_eq!(subset(client, 25).select(&keys), all);
        assert_eq!(subset(client, 19).select(&keys).len(), 19);
    }
    assert!(subset(3, 5).select(&Vec::<u8>::new()).is_empty());
}

#[test]
fn a_subset_of_zero_is_refused() {
    assert_eq!(
        Subset::new(4, 0),
        Err(BuildError::InvalidSubset { size: 0 })
    );
    let subset = subset(4, 1);
    assert_eq!((subset.client_id(), subset.size()), (4, 1));
}

// The adapter.

type Fleet = Update<u32, String>;

type Sent = Result<Fleet, &'static str>;
type Adapter<S> = task::Spawn<SubsetDiscovery<S, u32, String>>;

/// An adapter over a channel, so that a test decides when the inner stream has nothing.
fn adapter(
    client_id: u64,
    size: usize,
) -> (
    mpsc::UnboundedSender<Sent>,
    Adapter<impl Stream<Item = Sent>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inner = stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, task::spawn(subset(client_id, size).discover(inner)))
}

fn target(key: u32, version: u32) -> String {
    format!("10.0.0.{key}:80/v{version}")
}

fn reset(keys: impl IntoIterator<Item = u32>) -> Fleet {
    Update::Reset(keys.into_iter().map(|k| (k, target(k, 0))).collect())
}

fn next<S: Stream>(stream: &mut task::Spawn<S>) -> Option<S::Item> {
    match stream.poll_next() {
        Poll::Ready(item) => item,
        Poll::Pending => panic!("the adapter is pending"),
    }
}

fn chosen(client_id: u64, size: usize, keys: &[u32]) -> Vec<u32> {
    subset(client_id, size)
        .select(keys)
        .into_iter()
        .copied()
        .collect()
}

#[test]
fn the_adapter_yields_a_reset_of_the_subset_then_only_its_changes() {
    let (tx, mut discovery) = adapter(1, 3);
    assert_pending!(discovery.poll_next());

    let mut keys: Vec<u32> = (0..10).collect();
    tx.send(Ok(reset(keys.clone()))).unwrap();
    let members = chosen(1, 3, &keys);
    assert_eq!(
        next(&mut discovery),
        Some(Ok(Update::Reset(
            members.iter().map(|&k| (k, target(k, 0))).collect()
        )))
    );
    assert_pending!(discovery.poll_next());
    assert_eq!(discovery.members().copied().collect::<Vec<_>>(), members);
    assert_eq!(discovery.fleet_len(), 10);

    // A new target for a server out of the subset, or the same target again for one in it:
    // nothing to say.
    let outsider = *keys.iter().find(|k| !members.contains(k)).unwrap();
    tx.send(Ok(Update::Add(vec![
        (outsider, target(outsider, 1)),
        (members[0], target(members[0], 0)),
    ])))
    .unwrap();
    assert_pending!(discovery.poll_next());

    // A server leaving the fleet without touching the subset (there is one: the subset moves by
    // at most one rank): nothing either.
    let quiet = *keys
        .iter()
        .find(|&&k| {
            let rest: Vec<u32> = keys.iter().copied().filter(|&r| r != k).collect();
            !members.contains(&k) && chosen(1, 3, &rest) == members
        })
        .expect("a removal that leaves the subset alone");
    keys.retain(|&k| k != quiet);
    tx.send(Ok(Update::Remove(vec![quiet]))).unwrap();
    assert_pending!(discovery.poll_next());

    // A new target for a member: an Add of it alone.
    tx.send(Ok(Update::Add(vec![(members[1], target(members[1], 2))])))
        .unwrap();
    assert_eq!(
        next(&mut discovery),
        Some(Ok(Update::Add(vec![(members[1], target(members[1], 2))])))
    );
    assert_pending!(discovery.poll_next());

    // A member leaving the fleet: a Remove of it, then an Add of its replacement(s).
    let gone = members[0];
    keys.retain(|&k| k != gone);
    let now = chosen(1, 3, &keys);
    let entered: Vec<u32> = now
        .iter()
        .copied()
        .filter(|k| !members.contains(k))
        .collect();
    let left: Vec<u32> = members
        .iter()
        .copied()
        .filter(|k| !now.contains(k))
        .collect();
    assert!(left.contains(&gone));
    assert!(!entered.is_empty());
    tx.send(Ok(Update::Remove(vec![gone]))).unwrap();
    assert_eq!(next(&mut discovery), Some(Ok(Update::Remove(left))));
    assert_eq!(
        next(&mut discovery),
        Some(Ok(Update::Add(
            entered.iter().map(|&k| (k, target(k, 0))).collect()
        )))
    );
    assert_pending!(discovery.poll_next());
    assert_eq!(discovery.members().copied().collect::<Vec<_>>(), now);

    // A Reset of the fleet as it is: nothing.
    tx.send(Ok(Update::Reset(
        keys.iter()
            .map(|&k| {
                let version = if k == members[1] {
                    2
                } else if k == outsider {
                    1
                } else {
                    0
                };
                (k, target(k, version))
            })
            .collect(),
    )))
    .unwrap();
    assert_pending!(discovery.poll_next());

    drop(tx);
    assert_eq!(assert_ready!(discovery.poll_next()), None);
}

#[test]
fn the_adapter_passes_errors_and_does_not_exist_through() {
    let (tx, mut discovery) = adapter(5, 2);
    tx.send(Err("discovery failed")).unwrap();
    assert_eq!(next(&mut discovery), Some(Err("discovery failed")));

    tx.send(Ok(reset(0..6))).unwrap();
    let members = chosen(5, 2, &(0..6).collect::<Vec<_>>());
    assert_eq!(
        next(&mut discovery),
        Some(Ok(Update::Reset(
            members.iter().map(|&k| (k, target(k, 0))).collect()
        )))
    );

    tx.send(Err("lost the watch")).unwrap();
    assert_eq!(next(&mut discovery), Some(Err("lost the watch")));
    assert_pending!(discovery.poll_next());

    tx.send(Ok(Update::DoesNotExist)).unwrap();
    assert_eq!(next(&mut discovery), Some(Ok(Update::DoesNotExist)));
    assert_eq!(discovery.fleet_len(), 0);
    assert_eq!(discovery.members().count(), 0);

    // The fleet is back: its subset as a Reset again.
    tx.send(Ok(Update::Add(vec![(1, target(1, 0)), (2, target(2, 0))])))
        .unwrap();
    assert_eq!(
        next(&mut discovery),
        Some(Ok(Update::Reset(vec![
            (1, target(1, 0)),
            (2, target(2, 0))
        ])))
    );
    assert_pending!(discovery.poll_next());
}

#[test]
fn the_adapter_over_a_finite_stream() {
    let updates = vec![
        Ok::<Fleet, &str>(reset(0..4)),
        Ok(Update::Add(vec![(9, target(9, 0))])),
        Err("boom"),
    ];
    let mut discovery = task::spawn(subset(0, 4).discover(stream::iter(updates)));
    assert!(format!("{:?}", *discovery).starts_with("SubsetDiscovery"));
    assert_eq!(next(&mut discovery), Some(Ok(reset(0..4))));
    // Client 0 keeps servers 0 to 3 of 0, 1, 2, 3 and 9: nothing to say about 9.
    assert_eq!(next(&mut discovery), Some(Err("boom")));
    assert_eq!(next(&mut discovery), None);

    // A size-4 subset of 5 servers: one of them leaves the subset and 9 enters it.
    let mut discovery = task::spawn(subset(3, 4).discover(stream::iter(vec![
        Ok::<Fleet, &str>(reset(0..5)),
        Ok(Update::Remove(vec![0, 1, 2, 3, 4])),
    ])));
    let Some(Ok(Update::Reset(first))) = next(&mut discovery) else {
        panic!("no reset")
    };
    assert_eq!(first.len(), 4);
    assert_eq!(
        next(&mut discovery),
        Some(Ok(Update::Remove(first.iter().map(|(k, _)| *k).collect())))
    );
    assert_eq!(next(&mut discovery), None);
}

#[test]
fn the_adapter_yields_after_a_bounded_run_of_updates_that_change_nothing() {
    // 100,000 updates that leave client 0's subset (0 to 3 of 0..8) as it is: the target of a
    // server outside it changes, again and again.
    const NO_OPS: u32 = 100_000;
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = read.clone();
    let updates = std::iter::once(reset(0..8))
        .chain((1..=NO_OPS).map(|version| Update::Add(vec![(7, target(7, version))])))
        .chain(std::iter::once(Update::Remove(vec![0])))
        .map(move |update| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<Fleet, &str>(update)
        });
    let mut discovery = task::spawn(subset(0, 4).discover(stream::iter(updates)));
    assert!(matches!(next(&mut discovery), Some(Ok(Update::Reset(_)))));
    let reads =
        |read: &std::sync::atomic::AtomicU32| read.load(std::sync::atomic::Ordering::Relaxed);

    let mut polls = 0;
    let mut before = reads(&read);
    let removed = loop {
        polls += 1;
        match discovery.poll_next() {
            Poll::Pending => {
                assert!(discovery.is_woken(), "a yield wakes the task again");
                let taken = reads(&read) - before;
                assert!(taken <= 1_024, "one poll read {taken} updates");
                before = reads(&read);
            }
            Poll::Ready(item) => break item,
        }
    };
    assert!(reads(&read) - before <= 1_024);
    assert_eq!(removed, Some(Ok(Update::Remove(vec![0]))));
    assert!(polls > 1, "the no-op updates took {polls} poll(s)");
    assert_eq!(reads(&read), NO_OPS + 2);
}

/// How many servers a client swaps when one server joins or leaves: measured over random
/// fleets, subset sizes and clients (seeded), against the bound `docs/p2c.md` states.
#[test]
fn one_server_joining_or_leaving_swaps_at_most_two_of_a_subset() {
    let mut rng = SmallRng::seed_from_u64(9);
    let mut worst = [0usize; 2];
    let mut swapped_two = [0usize; 2];
    let mut cases = 0usize;
    for _ in 0..20_000 {
        let n = rng.gen_range(2..64usize);
        let size = rng.gen_range(1..n + 2);
        let client = rng.gen::<u64>() % 4_096;
        let keys: BTreeSet<u32> = index::sample(&mut rng, 1_000, n)
            .into_iter()
            .map(|k| k as u32 * 2)
            .collect();
        let keys: Vec<u32> = keys.into_iter().collect();
        let before: BTreeSet<u32> = subset(client, size)
            .select(&keys)
            .into_iter()
            .copied()
            .collect();
        // A join (an odd key, new), then a leave.
        let joined = rng.gen_range(0..1_000u32) * 2 + 1;
        let mut more = keys.clone();
        more.push(joined);
        let gone = keys[rng.gen_range(0..n)];
        let fewer: Vec<u32> = keys.iter().copied().filter(|k| *k != gone).collect();
        for (change, after) in [&more, &fewer].into_iter().enumerate() {
            let after: BTreeSet<u32> = subset(client, size)
                .select(after)
                .into_iter()
                .copied()
                .collect();
            let out = before.difference(&after).count();
            worst[change] = worst[change].max(out);
            if out == 2 {
                swapped_two[change] += 1;
                // Only a window that wraps around the end of the key order, before or after.
                let wraps = |set: &BTreeSet<u32>, fleet: &[u32]| {
                    let (first, last) = (fleet.iter().min(), fleet.iter().max());
                    set.len() < fleet.len()
                        && first.is_some_and(|k| set.contains(k))
                        && last.is_some_and(|k| set.contains(k))
                };
                let fleet_after: &[u32] = if change == 0 { &more } else { &fewer };
                assert!(
                    wraps(&before, &keys) || wraps(&after, fleet_after),
                    "client {client}, size {size}: {before:?} -> {after:?}"
                );
            }
        }
        cases += 1;
    }
    eprintln!(
        "{cases} cases: worst swap on a join {}, on a leave {}; two swapped: {swapped_two:?}",
        worst[0], worst[1]
    );
    // The bound is reached, and never passed: two servers out, two in.
    assert_eq!(worst, [2, 2]);
    // The example of the docs: servers {1, 3, 5, 7}, size 3, client 11; server 0 joins.
    assert_eq!(chosen(11, 3, &[1, 3, 5, 7]), [1, 3, 7]);
    assert_eq!(chosen(11, 3, &[0, 1, 3, 5, 7]), [0, 5, 7]);
}
