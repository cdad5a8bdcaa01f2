//! The stable-toolchain side of the fuzz targets: replay `fuzz/corpus/<target>/` through a
//! target's check, and a seeded mutational campaign over that corpus (docs/reliability.md,
//! "Fuzzing"). Shared, by `#[path]`, by the crates' `tests/fuzz_parsers.rs`.

use std::path::PathBuf;

/// The seed inputs of `target`, by file name.
pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

/// Runs `check` on every seed of `target`; returns how many.
pub(crate) fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let seeds = corpus(target);
    for (name, data) in &seeds {
        eprintln!("{target}/{name}");
        check(data);
    }
    seeds.len()
}

/// Runs `check` on `runs` inputs made from the seeds of `target` by 1 to 8 random mutations
/// each (byte changes, insertions, deletions, `tokens` spliced in, crossovers between seeds),
/// from a fixed `seed`. A failing input is printed (escaped) before the panic is passed on.
pub(crate) fn random(
    target: &str,
    tokens: &[&[u8]],
    runs: usize,
    seed: u64,
    check: impl Fn(&[u8]),
) {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, data)| data).collect();
    let mut rng = Rng(seed | 1);
    for run in 0..runs {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(8) {
            mutate(&mut input, &seeds, tokens, &mut rng);
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        if let Err(panic) = outcome {
            eprintln!(
                "{target}: run {run} of seed {seed} failed on {:?}",
                String::from_utf8_lossy(&input)
            );
            std::panic::resume_unwind(panic);
        }
    }
    println!("{target}: {runs} random inputs (seed {seed}) passed");
}

fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], tokens: &[&[u8]], rng: &mut Rng) {
    let at = rng.below(input.len() + 1);
    match rng.below(7) {
        0 if !input.is_empty() => {
            let last = input.len() - 1;
            input[at.min(last)] = rng.byte();
        }
        1 => input.insert(at, rng.byte()),
        2 if !input.is_empty() => {
            let end = (at + 1 + rng.below(8)).min(input.len());
            input.drain(at.min(end)..end);
        }
        3 | 4 => {
            let token = tokens[rng.below(tokens.len())];
            input.splice(at..at, token.iter().copied());
        }
        5 => {
            let other = &seeds[rng.below(seeds.len())];
            let from = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
        _ => input.truncate(at),
    }
    input.truncate(4096);
}

/// What a random byte mostly is: the punctuation and digits the parsers care about.
const BYTES: &[u8] = b" \t\n#:.[]0123456789abcdef{}\",-+";

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Mostly printable ASCII, sometimes any byte.
    fn byte(&mut self) -> u8 {
        let r = self.next();
        if r.is_multiple_of(4) {
            (r >> 8) as u8
        } else {
            BYTES[(r >> 8) as usize % BYTES.len()]
        }
    }
}
