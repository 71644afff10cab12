//! Retry decisions: how many attempts a step gets and how long to wait before each retry.

use std::time::Duration;

use crate::workflow::RetrySpec;

/// A complete retry policy, with every field of [`RetrySpec`] filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts_max: u32,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Factor applied to the delay after each retry.
    pub backoff_multiplier: f64,
    /// Cap on any one delay.
    pub delay_max: Duration,
    /// Fraction (0 to 1) of each delay that is randomised.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// One attempt, no retry: a step retries only when its document asks for it.
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 1,
            delay: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            delay_max: Duration::from_secs(300),
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// Builds the policy of a step from its own spec, then the workflow defaults, then
    /// [`RetryPolicy::default`], field by field.
    pub fn resolve(step: Option<&RetrySpec>, defaults: Option<&RetrySpec>) -> RetryPolicy {
        let base = RetryPolicy::default();
        let pick =
            |get: fn(&RetrySpec) -> Option<f64>| step.and_then(get).or(defaults.and_then(get));
        let attempts_max = step
            .and_then(|spec| spec.max_attempts)
            .or(defaults.and_then(|spec| spec.max_attempts))
            .unwrap_or(base.attempts_max)
            .max(1);
        RetryPolicy {
            attempts_max,
            delay: pick(|spec| spec.delay_seconds).map_or(base.delay, seconds),
            backoff_multiplier: pick(|spec| spec.backoff_multiplier)
                .unwrap_or(base.backoff_multiplier)
                .max(1.0),
            delay_max: pick(|spec| spec.max_delay_seconds).map_or(base.delay_max, seconds),
            jitter: pick(|spec| spec.jitter)
                .unwrap_or(base.jitter)
                .clamp(0.0, 1.0),
        }
    }

    /// Decides what follows the failure of attempt number `attempt` (1 for the first).
    ///
    /// `random` is a number in `[0, 1)` that the caller draws, so that this stays a pure function
    /// and tests can pin the jitter. A failure that the agent marked as not retryable ends the step
    /// whatever the count. `retry_after` is a delay the outside service asked for (an HTTP
    /// `Retry-After`); the wait is never shorter than it.
    pub fn decide(
        &self,
        attempt: u32,
        is_retryable: bool,
        retry_after: Option<Duration>,
        random: f64,
    ) -> RetryDecision {
        if !is_retryable || attempt >= self.attempts_max {
            return RetryDecision::GiveUp;
        }
        let exponent = i32::try_from(attempt - 1).unwrap_or(i32::MAX);
        let raw = self.delay.as_secs_f64() * self.backoff_multiplier.powi(exponent);
        let capped = raw.min(self.delay_max.as_secs_f64());
        // Jitter takes away up to `jitter` of the delay, so the cap stays an upper bound.
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        let mut delay = seconds(jittered);
        if let Some(asked) = retry_after {
            delay = delay.max(asked);
        }
        RetryDecision::RetryAfter(delay)
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Run another attempt after this delay.
    RetryAfter(Duration),
    /// The step has failed for good.
    GiveUp,
}

/// Converts seconds from a document into a duration, treating negative and non-finite values
/// (which validation rejects) as zero.
pub fn seconds(value: f64) -> Duration {
    if value.is_finite() && value > 0.0 {
        Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exponential() -> RetryPolicy {
        RetryPolicy {
            attempts_max: 5,
            delay: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            delay_max: Duration::from_secs(5),
            jitter: 0.0,
        }
    }

    #[test]
    fn exponential_delays_double_up_to_cap() {
        let policy = exponential();
        let delays: Vec<_> = (1..5)
            .map(|attempt| policy.decide(attempt, true, None, 0.0))
            .collect();
        let secs = |n| RetryDecision::RetryAfter(Duration::from_secs(n));
        assert_eq!(delays, vec![secs(1), secs(2), secs(4), secs(5)]);
    }

    #[test]
    fn gives_up_after_attempts_max() {
        assert_eq!(
            exponential().decide(5, true, None, 0.0),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn gives_up_on_non_retryable_error() {
        assert_eq!(
            exponential().decide(1, false, None, 0.0),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn jitter_shortens_delay_within_fraction() {
        let policy = RetryPolicy {
            jitter: 0.5,
            ..exponential()
        };
        let decision = policy.decide(2, true, None, 0.999);
        let RetryDecision::RetryAfter(delay) = decision else {
            panic!("expected a retry")
        };
        assert!(delay >= Duration::from_secs(1), "{delay:?}");
        assert!(delay < Duration::from_secs(2), "{delay:?}");
    }

    #[test]
    fn retry_after_lengthens_delay() {
        let decision = exponential().decide(1, true, Some(Duration::from_secs(7)), 0.0);
        assert_eq!(decision, RetryDecision::RetryAfter(Duration::from_secs(7)));
    }

    #[test]
    fn step_spec_overrides_defaults_field_by_field() {
        let step = RetrySpec {
            max_attempts: Some(3),
            ..RetrySpec::default()
        };
        let defaults = RetrySpec {
            delay_seconds: Some(0.25),
            max_attempts: Some(9),
            ..RetrySpec::default()
        };
        let policy = RetryPolicy::resolve(Some(&step), Some(&defaults));
        assert_eq!(policy.attempts_max, 3);
        assert_eq!(policy.delay, Duration::from_millis(250));
    }
}
