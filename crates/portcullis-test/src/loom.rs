//! Running a loom model and saying how much it explored: shared by the models of our own
//! lock-free protocols (the retry budget's ledger, the fan-out's slot wakers). Built with
//! `--cfg loom` only.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// Runs `model` under loom, at most `preemptions` preemptions per execution unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise, and prints how many interleavings it explored.
pub fn explore(name: &str, preemptions: usize, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(Some(preemptions));
    let bound = builder.preemption_bound;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let started = Instant::now();
    builder.check(move || {
        counted.fetch_add(1, Relaxed);
        model();
    });
    println!(
        "loom {name}: {} interleavings explored (preemption bound {bound:?}) in {:.1?}",
        runs.load(Relaxed),
        started.elapsed()
    );
}
