//! Exponential backoff with jitter, a fresh random sequence per request.
//!
//! The `n`th retry (from 0) waits a random delay drawn under the ceiling
//! `min(cap, base × factor^n)`, computed in nanoseconds by the schedule every crate backs off
//! by ([`ExponentialBackoff`]). Jitter is applied *after* the cap, so
//! requests that reached the cap still spread out (tower clamps after jittering, so every
//! capped request waits exactly the cap). Each request draws from its own generator, seeded
//! from a shared source: two requests failing together get different sequences (tower hands
//! every request the same one), and a [seeded](Backoff::seed) source replays exactly.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::{OsRng, SmallRng};
use rand::{Rng, SeedableRng};

use portcullis_pool::backoff::ExponentialBackoff;
use portcullis_pool::time::saturating_nanos;

use crate::error::BuildError;

/// How a delay is drawn under the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]` (the default; spreads load best).
    #[default]
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    Equal,
    /// Exactly the ceiling.
    None,
}

/// Exponential backoff configuration.
///
/// ```
/// use std::time::Duration;
/// use portcullis_retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(100))?.seed(7);
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(10));
/// assert_eq!(backoff.ceiling(5), Duration::from_millis(100));
///
/// // Checked where it is made: a factor below 1 would shrink the delays.
/// assert!(Backoff::new(Duration::from_millis(10), 0.5, Duration::from_millis(100)).is_err());
/// # Ok::<(), portcullis_retry::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceilings: `portcullis-pool`'s schedule, which every crate's backoff follows.
    schedule: ExponentialBackoff,
    jitter: Jitter,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// [`DEFAULT_BASE`](Self::DEFAULT_BASE) × [`DEFAULT_FACTOR`](Self::DEFAULT_FACTOR)^n,
    /// capped at [`DEFAULT_CAP`](Self::DEFAULT_CAP), full jitter, random seed.
    fn default() -> Self {
        DEFAULT_BACKOFF
    }
}

/// The default backoff, checked when this crate compiles.
const DEFAULT_BACKOFF: Backoff = match Backoff::new(
    Backoff::DEFAULT_BASE,
    Backoff::DEFAULT_FACTOR,
    Backoff::DEFAULT_CAP,
) {
    Ok(backoff) => backoff,
    Err(_) => panic!("the default backoff is invalid"),
};

impl Backoff {
    /// The default base delay.
    pub const DEFAULT_BASE: Duration = Duration::from_millis(25);
    /// The default growth factor.
    pub const DEFAULT_FACTOR: f64 = 2.0;
    /// The default cap.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(1);

    /// `base × factor^n`, capped at `cap`, with full jitter.
    ///
    /// Refuses a factor that is not finite or below 1 and a cap below the base
    /// ([`BuildError::Backoff`]; a zero base is a schedule of zero waits, and allowed).
    pub const fn new(base: Duration, factor: f64, cap: Duration) -> Result<Self, BuildError> {
        match ExponentialBackoff::new(base, factor, cap) {
            Ok(schedule) => Ok(Self {
                schedule,
                jitter: Jitter::Full,
                seed: None,
            }),
            Err(error) => Err(BuildError::Backoff(error)),
        }
    }

    /// How delays are drawn under the ceiling.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Seeds the shared source per-request generators are drawn from, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub(crate) fn seed_value(&self) -> Option<u64> {
        self.seed
    }

    /// The longest delay the `retry`th retry (from 0) can wait.
    pub fn ceiling(&self, retry: u32) -> Duration {
        Duration::from_nanos(self.ceiling_nanos(retry))
    }

    fn ceiling_nanos(&self, retry: u32) -> u64 {
        self.schedule.wait_nanos(retry)
    }

    /// The longest delay this backoff ever draws.
    pub fn cap(&self) -> Duration {
        self.schedule.cap()
    }

    /// The worst-case total sleep over `retries` retries: the sum of [`ceiling`](Self::ceiling)
    /// for every retry from 0 to `retries - 1` (saturating at [`Duration::MAX`]).
    ///
    /// Computed in constant time whatever `retries` is (at most 1 024 ceilings are added one
    /// by one), so building a layer with `max_attempts(u32::MAX)` is immediate:
    ///
    /// * exact for 1 024 retries or fewer, and for any number when the ceilings are constant
    ///   (factor 1, or a zero base) or reach the cap within the first 1 024 retries (every
    ///   factor of 1.045 or more does, whatever the base and cap);
    /// * otherwise (a factor within a few percent of 1),
    ///   a closed-form upper bound: never below the exact sum and, for a factor above 1, above
    ///   it by less than 1 ns per retry past the 1 024th plus one part in a million.
    pub fn worst_case(&self, retries: u32) -> Duration {
        nanos_duration(self.worst_case_nanos(retries))
    }

    /// In `u128` nanoseconds: `u32::MAX` ceilings of up to `u64::MAX` each never overflow it,
    /// so a total past `u64::MAX` ns is still compared rightly with a longer deadline.
    fn worst_case_nanos(&self, retries: u32) -> u128 {
        let cap = u128::from(saturating_nanos(self.schedule.cap()));
        let base = saturating_nanos(self.schedule.base());
        let factor = self.schedule.factor();
        if factor == 1.0 || base == 0 {
            // base × 1^n is base exactly, and 0 × anything is 0 (NaN, for 0 × inf, casts to
            // 0): every ceiling is the first.
            return u128::from(self.ceiling_nanos(0)) * u128::from(retries);
        }
        let exact = retries.min(EXACT_TERMS);
        let mut total = 0u128;
        for n in 0..exact {
            let ceiling = u128::from(self.ceiling_nanos(n));
            if ceiling >= cap {
                // Ceilings never shrink (factor ≥ 1), so every later one is the cap too.
                return total + cap * u128::from(retries - n);
            }
            total += ceiling;
        }
        let rest = retries - exact;
        if rest == 0 {
            return total;
        }
        if factor.is_finite() && factor > 1.0 {
            total + self.geometric_tail(exact, rest, cap, retries)
        } else {
            // A factor `build` refuses: no ceiling exceeds the cap.
            total + cap * u128::from(rest)
        }
    }

    /// An upper bound on the ceilings of the `rest` retries from `first` on, for a finite
    /// factor above 1 whose ceilings are still below `cap` at `first`: the real-valued
    /// geometric sum of `base × factor^n` up to the retry whose value reaches the cap, then
    /// the cap for each later retry.
    fn geometric_tail(&self, first: u32, rest: u32, cap: u128, retries: u32) -> u128 {
        // The same rounded base the ceilings are computed from (1 or more: base 0 is handled
        // by the caller).
        let base = saturating_nanos(self.schedule.base()) as f64;
        let factor = self.schedule.factor();
        let ln_factor = (factor - 1.0).ln_1p();
        // Retries from `first` on whose real-valued ceiling is below the cap. Any count is a
        // valid split (a term counted at its real value where the cap applies is only larger),
        // so rounding here costs tightness, never soundness.
        let below = ((cap as f64 / base).ln() / ln_factor - f64::from(first)).ceil();
        // `as` saturates (and maps NaN to 0).
        let below = (below as u32).min(rest);
        // base × factor^first × (factor^below - 1) / (factor - 1), without the cancellation
        // of `factor^below - 1` for a factor close to 1.
        let sum =
            base * (f64::from(first) * ln_factor).exp() * (f64::from(below) * ln_factor).exp_m1()
                / (factor - 1.0);
        // `powi` multiplies the factor by itself, so a ceiling carries a relative rounding
        // error of up to about `retry` units in the last place: cover it, and the few roundings
        // of this formula, with a margin of that size.
        let margin = 1.0 + (f64::from(retries) + 64.0) * f64::EPSILON;
        let geometric = (sum * margin).ceil();
        let capped = cap * u128::from(below);
        let geometric = if geometric.is_finite() && geometric >= 0.0 {
            // `as` saturates.
            (geometric as u128).min(capped)
        } else {
            capped
        };
        geometric + cap * u128::from(rest - below)
    }

    /// Draws the `retry`th delay from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling_nanos(retry);
        let nanos = match self.jitter {
            Jitter::Full => rng.gen_range(0..=ceiling),
            Jitter::Equal => rng.gen_range(ceiling / 2..=ceiling),
            Jitter::None => ceiling,
        };
        Duration::from_nanos(nanos)
    }
}

/// How many ceilings [`Backoff::worst_case`] adds one by one before it switches to a closed
/// form: enough that every ordinary backoff (a factor of 1.045 or more, whatever its base and
/// cap) reaches its cap first and gets an exact total, few enough to cost microseconds.
const EXACT_TERMS: u32 = 1024;

/// `nanos` as a [`Duration`], saturating at [`Duration::MAX`].
fn nanos_duration(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Hands out per-request generators from one seed: the `n`th is seeded with the request
/// number `n` mixed into the seed, so requests never share a sequence, none waits on another
/// (a counter, not a shared generator behind a lock), and a [seeded](Backoff::seed) source
/// replays exactly. Unseeded, the seed is drawn from the operating system ([`OsRng`]).
pub(crate) struct RngSource {
    seed: u64,
    next: AtomicU64,
}

impl RngSource {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Self {
            seed: seed.unwrap_or_else(|| OsRng.gen()),
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn rng(&self) -> SmallRng {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(splitmix(self.seed ^ splitmix(n)))
    }
}

impl fmt::Debug for RngSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RngSource")
            .field("seed", &self.seed)
            .field("next", &self.next.load(Ordering::Relaxed))
            .finish()
    }
}

/// SplitMix64's output function (the mixer `SmallRng::seed_from_u64` itself expands a seed
/// with): consecutive request numbers give unrelated seeds. Every seeded sequence depends on
/// it (`seeded_sequences_are_pinned`).
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_test::time::ms;
    use proptest::prelude::*;

    #[test]
    fn sequences_differ_between_requests() {
        let b = Backoff::new(ms(10), 2.0, ms(1000)).unwrap();
        let source = RngSource::new(Some(42));
        let seq = |rng: &mut SmallRng| (0..5).map(|n| b.delay(n, rng)).collect::<Vec<_>>();
        let a = seq(&mut source.rng());
        let c = seq(&mut source.rng());
        assert_ne!(a, c);
        // Same seed, same order: the same sequences again.
        let again = RngSource::new(Some(42));
        assert_eq!(seq(&mut again.rng()), a);
        assert_eq!(seq(&mut again.rng()), c);
    }

    /// `SmallRng` is another generator on 32-bit targets: these are the 64-bit sequences.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn seeded_sequences_are_pinned() {
        // The delays in nanoseconds of a source seeded with 42, its first three requests: a
        // seeded backoff draws the same sequences from one release to the next.
        let b = Backoff::new(ms(10), 2.0, ms(1000)).unwrap();
        let source = RngSource::new(Some(42));
        let pinned: [[u64; 5]; 3] = [
            [7_545_229, 8_495_698, 14_327_023, 18_232_636, 80_169_019],
            [3_804_882, 3_285_561, 34_751_658, 79_549_998, 61_025_201],
            [9_870_041, 14_893_682, 11_729_141, 54_240_787, 151_574_548],
        ];
        for expected in pinned {
            let mut rng = source.rng();
            let delays = (0..5).map(|n| b.delay(n, &mut rng));
            assert!(delays.eq(expected.map(Duration::from_nanos)));
        }
    }

    #[test]
    fn jitter_applies_at_the_cap() {
        let b = Backoff::new(ms(10), 2.0, ms(40)).unwrap();
        let mut rng = RngSource::new(Some(1)).rng();
        let capped: Vec<_> = (0..50).map(|_| b.delay(20, &mut rng)).collect();
        assert!(capped.iter().all(|d| *d <= ms(40)));
        let distinct: std::collections::HashSet<_> = capped.iter().collect();
        assert!(distinct.len() > 40, "capped delays must still be spread");
        assert!(capped.iter().any(|d| *d < ms(30)));
    }

    #[test]
    fn nanosecond_precision() {
        let b = Backoff::new(Duration::from_nanos(3), 1.5, Duration::from_secs(1))
            .unwrap()
            .jitter(Jitter::None);
        assert_eq!(b.ceiling(1), Duration::from_nanos(4));
        assert_eq!(b.ceiling(2), Duration::from_nanos(6));
        let mut rng = RngSource::new(Some(3)).rng();
        let full = Backoff::new(ms(1), 1.0, ms(1)).unwrap();
        // Some delay is not a whole number of milliseconds.
        assert!((0..20).any(|_| {
            let d = full.delay(0, &mut rng);
            d.subsec_nanos() != d.subsec_millis() * 1_000_000
        }));
    }

    #[test]
    fn worst_case_sums_ceilings() {
        let b = Backoff::new(ms(100), 2.0, ms(300)).unwrap();
        assert_eq!(b.worst_case(0), Duration::ZERO);
        assert_eq!(b.worst_case(4), ms(100 + 200 + 300 + 300));
        // Past the cap the total is computed, not looped: u32::MAX retries answer at once.
        assert_eq!(
            b.worst_case(u32::MAX),
            ms(100 + 200) + ms(300) * (u32::MAX - 2)
        );
    }

    /// The definition, one ceiling at a time: the slow reference `worst_case` must agree with.
    fn worst_case_by_loop(b: &Backoff, retries: u32) -> u128 {
        (0..retries).map(|n| u128::from(b.ceiling_nanos(n))).sum()
    }

    #[test]
    fn worst_case_matches_the_sum_of_ceilings_on_small_cases() {
        let mut checked = 0;
        for base in [0u64, 1, 3, 7, 1_000, 999_999, 25_000_000] {
            for factor in [1.0, 1.05, 1.1, 1.5, 2.0, 3.0, 10.0, 1e300] {
                for extra in [0u64, 1, 5, 1_000, 1_000_000_000] {
                    let b = Backoff::new(
                        Duration::from_nanos(base),
                        factor,
                        Duration::from_nanos(base + extra),
                    )
                    .unwrap();
                    for retries in [0u32, 1, 2, 3, 10, 100, 1023, 1024, 1025, 3000] {
                        assert_eq!(
                            b.worst_case(retries).as_nanos(),
                            worst_case_by_loop(&b, retries),
                            "base {base} ns, factor {factor}, cap {} ns, {retries} retries",
                            base + extra
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 8 * 5 * 10);
    }

    #[test]
    fn worst_case_past_1024_uncapped_retries_is_a_tight_upper_bound() {
        // Factors so close to 1 that the ceilings are still below the cap after 1 024
        // retries: the closed form takes over, never below the exact sum and above it by less
        // than 1 ns per retry past the 1 024th plus one part in a million.
        for (base, factor, cap) in [
            (1u64, 1.001, 1_000_000_000u64),
            (1_000_000, 1.0001, 60_000_000_000),
            (3, 1.000_000_1, 10),
            (25_000_000, 1.000_01, 1_000_000_000),
            (7, 1.0 + f64::EPSILON, u64::MAX),
        ] {
            let b = Backoff::new(
                Duration::from_nanos(base),
                factor,
                Duration::from_nanos(cap),
            )
            .unwrap();
            for retries in [1025u32, 2_000, 20_000, 200_000] {
                let exact = worst_case_by_loop(&b, retries);
                let fast = b.worst_case(retries).as_nanos();
                let slack = u128::from(retries - 1024) + exact / 1_000_000;
                assert!(
                    exact <= fast && fast <= exact + slack,
                    "base {base} ns, factor {factor}, cap {cap} ns, {retries} retries: \
                     {fast} vs exactly {exact}"
                );
            }
        }
    }

    #[test]
    fn worst_case_of_u32_max_retries_is_immediate_for_every_factor() {
        // The loop this replaced ran once per retry until the cap: 4 294 967 295 times for a
        // constant backoff or a zero base.
        let ms = Duration::from_millis;
        let constant = Backoff::new(ms(10), 1.0, ms(100)).unwrap();
        assert_eq!(constant.worst_case(u32::MAX), ms(10) * u32::MAX);
        let zero = Backoff::new(Duration::ZERO, 2.0, ms(100)).unwrap();
        assert_eq!(zero.worst_case(u32::MAX), Duration::ZERO);
        let zero_constant = Backoff::new(Duration::ZERO, 1.0, Duration::ZERO).unwrap();
        assert_eq!(zero_constant.worst_case(u32::MAX), Duration::ZERO);
        // Past u64::MAX ns the total is still exact, and it saturates at Duration::MAX rather
        // than overflow.
        let long = Backoff::new(Duration::from_nanos(u64::MAX), 1.0, Duration::MAX).unwrap();
        assert_eq!(long.worst_case(2).as_nanos(), 2 * u128::from(u64::MAX));
        let huge = Backoff::new(Duration::MAX, 1.0, Duration::MAX).unwrap();
        assert_eq!(huge.worst_case(u32::MAX), Duration::MAX);
        // Barely above 1: the ceilings never reach the cap within u32::MAX retries, so the sum
        // is close to base × retries (1 + δ)^n summed: between its two bounds.
        let creeping = Backoff::new(ms(1), 1.0 + 1e-12, ms(1000)).unwrap();
        let total = creeping.worst_case(u32::MAX).as_secs_f64();
        let n = f64::from(u32::MAX);
        let expected = 1e-3 * ((n * 1e-12).exp_m1() / 1e-12);
        assert!(
            (total - expected).abs() / expected < 2e-6,
            "{total} vs {expected}"
        );
        // Factors that would shrink or break the delays cannot make a backoff at all.
        for factor in [0.5, 0.0, -2.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(
                matches!(
                    Backoff::new(ms(10), factor, ms(100)),
                    Err(BuildError::Backoff(crate::BackoffError::Factor(_)))
                ),
                "factor {factor}"
            );
        }
    }

    proptest! {
        // Seeded: every run tries the same cases.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x00ba_c0ff),
            ..ProptestConfig::default()
        })]

        #[test]
        fn worst_case_is_never_below_the_sum_of_ceilings(
            base in 0u64..1_000_000_000,
            factor in 1.0f64..1.01,
            extra in 0u64..100_000_000_000,
            retries in 0u32..5_000,
        ) {
            let cap = Duration::from_nanos(base + extra);
            let b = Backoff::new(Duration::from_nanos(base), factor, cap).unwrap();
            let exact = worst_case_by_loop(&b, retries);
            let fast = b.worst_case(retries).as_nanos();
            let slack = u128::from(retries.saturating_sub(1024)) + exact / 1_000_000;
            prop_assert!(exact <= fast);
            prop_assert!(fast <= exact + slack);
            if retries <= 1024 {
                prop_assert_eq!(fast, exact);
            }
        }

        #[test]
        fn every_delay_is_within_bounds(
            base in 0u64..1_000_000_000,
            factor in 1.0f64..10.0,
            extra in 0u64..5_000_000_000,
            retry in 0u32..200,
            seed: u64,
            jitter in prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::None)],
        ) {
            let cap = Duration::from_nanos(base + extra);
            let b = Backoff::new(Duration::from_nanos(base), factor, cap).unwrap().jitter(jitter);
            let mut rng = RngSource::new(Some(seed)).rng();
            let d = b.delay(retry, &mut rng);
            let ceiling = b.ceiling(retry);
            prop_assert!(ceiling <= cap);
            prop_assert!(ceiling >= Duration::from_nanos(base).min(cap));
            prop_assert!(d <= ceiling);
            if jitter == Jitter::Equal {
                prop_assert!(d >= ceiling / 2);
            }
        }
    }
}
