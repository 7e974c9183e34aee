//! Waits between attempts: one jitter and one exponential backoff for every retry in the library
//! (provider submissions, webhook deliveries, DynamoDB transaction conflicts).

use std::time::Duration;

/// `base` scaled by a random factor in `[1 - spread, 1 + spread]` (`spread` in 0..=1), so that
/// retries started together spread out. Without randomness, `base` itself.
pub fn jittered(base: Duration, spread: f64) -> Duration {
    let mut bytes = [0u8; 2];
    let unit = if getrandom::fill(&mut bytes).is_ok() {
        f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    let spread = spread.clamp(0.0, 1.0);
    base.mul_f64(1.0 - spread + 2.0 * spread * unit)
}

/// `first * 2^attempt` (the doubling stops at attempt 6), jittered by `spread`.
pub fn exponential(first: Duration, attempt: u32, spread: f64) -> Duration {
    jittered(first * 2u32.pow(attempt.min(6)), spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_spread_and_varies() {
        let base = Duration::from_secs(10);
        let waits: Vec<_> = (0..200).map(|_| jittered(base, 0.2)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_secs(8) && *w <= Duration::from_secs(12))
        );
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter at all");
        assert_eq!(jittered(base, 0.0), base);
    }

    #[test]
    fn exponential_doubles_then_stops() {
        let first = Duration::from_millis(500);
        assert_eq!(exponential(first, 0, 0.0), first);
        assert_eq!(exponential(first, 3, 0.0), first * 8);
        assert_eq!(exponential(first, 9, 0.0), first * 64);
    }
}
