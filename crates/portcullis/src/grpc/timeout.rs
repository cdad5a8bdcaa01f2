//! `grpc-timeout`: the time a call has left, sent with each attempt (the gRPC over HTTP/2
//! protocol: at most 8 digits, then a unit, `H`, `M`, `S`, `m`, `u` or `n`).

use std::time::Duration;
use tokio::time::Instant;

/// The header's name.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Reads a `grpc-timeout` value; `None` if it is not one.
pub(crate) fn parse(value: &[u8]) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes `left` as a `grpc-timeout` value in the finest unit that fits in 8 digits, rounded
/// down (a server never gets more time than the caller has), and at least `1n`.
pub(crate) fn format(left: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = left.as_nanos().max(1);
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let n = nanos / per;
        if n <= MAX {
            return format!("{}{unit}", n.max(1));
        }
    }
    format!("{MAX}H")
}

/// When a call must be over: its client's deadline runs from when the caller began to wait
/// for readiness; a caller's own timeout (gRPC's `grpc-timeout`) may shorten it.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallClock {
    /// When the caller's wait for readiness began, if `poll_ready` found the stack not ready.
    ready_since: Option<Instant>,
}

impl CallClock {
    /// `poll_ready` found the stack not ready.
    pub(crate) fn waiting(&mut self) {
        self.ready_since.get_or_insert_with(Instant::now);
    }

    /// The deadline of the call made now: the earlier of `own` from the start of the wait
    /// (or now) and the caller's `caller` from now.
    pub(crate) fn deadline(
        &mut self,
        own: Option<Duration>,
        caller: Option<Duration>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let start = self.ready_since.take().unwrap_or(now);
        let own = own.map(|deadline| start + deadline);
        let caller = caller.map(|left| now + left);
        match (own, caller) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_the_protocol_says() {
        assert_eq!(parse(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [
            &b""[..],
            b"S",
            b"1",
            b"1s",
            b"-1S",
            b"123456789S",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn written_in_the_finest_unit_that_fits_rounded_down() {
        assert_eq!(format(Duration::from_nanos(0)), "1n");
        assert_eq!(format(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(format(Duration::from_millis(100)), "100000u");
        assert_eq!(format(Duration::from_millis(1500)), "1500000u");
        assert_eq!(format(Duration::from_secs(100_000)), "100000S");
        assert_eq!(format(Duration::from_secs(u64::MAX)), "99999999H");
        for d in [1u64, 999, 123_456_789, 5_000_000_000, 86_400_000_000_000] {
            let d = Duration::from_nanos(d);
            let back = parse(format(d).as_bytes()).unwrap();
            assert!(
                back <= d && back >= d.mul_f64(0.999_99),
                "{d:?} -> {back:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_s_timeout_shortens_the_deadline_and_never_lengthens_it() {
        let ms = Duration::from_millis;
        let now = Instant::now();
        let mut clock = CallClock::default();
        assert_eq!(clock.deadline(None, None), None);
        assert_eq!(clock.deadline(Some(ms(500)), None), Some(now + ms(500)));
        assert_eq!(
            clock.deadline(Some(ms(500)), Some(ms(100))),
            Some(now + ms(100))
        );
        assert_eq!(
            clock.deadline(Some(ms(500)), Some(ms(900))),
            Some(now + ms(500))
        );
        assert_eq!(clock.deadline(None, Some(ms(900))), Some(now + ms(900)));

        // The client's own deadline counts the wait for readiness; the caller's runs from the
        // call.
        clock.waiting();
        tokio::time::advance(ms(200)).await;
        let later = Instant::now();
        assert_eq!(clock.deadline(Some(ms(500)), None), Some(now + ms(500)));
        assert_eq!(clock.deadline(Some(ms(500)), None), Some(later + ms(500)));
    }
}
