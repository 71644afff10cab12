//! Job priorities and the ageing rule that keeps low priorities from starving.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The urgency of a job. Higher priorities are claimed first, FIFO inside one priority.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Ahead of medium and low.
    High,
    /// Ahead of everything else.
    Critical,
}

/// Milliseconds of waiting that count as one priority level when jobs are ordered for claiming.
///
/// A job that has waited this long competes with jobs one level above it that were just queued,
/// so a steady stream of critical jobs delays a low job by at most three of these periods.
pub const AGEING_STEP_MS: i64 = 60_000;

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Critical,
    ];

    /// Returns the numeric rank stored in the database: low 0, medium 1, high 2, critical 3.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Medium => 1,
            Priority::High => 2,
            Priority::Critical => 3,
        }
    }

    /// Returns the priority of a stored rank, or `None` for a rank out of range.
    pub fn from_rank(rank: i64) -> Option<Priority> {
        Priority::ALL.get(usize::try_from(rank).ok()?).copied()
    }

    /// Returns the lowercase name used in documents, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Computes the claim order key of a job queued at `queued_at_ms`: smaller claims first.
    ///
    /// Each priority level is worth `AGEING_STEP_MS` of waiting, so the key is the queue time
    /// moved earlier by the priority. Jobs of one priority keep FIFO order.
    pub fn claim_key(self, queued_at_ms: i64) -> i64 {
        queued_at_ms - self.rank() * AGEING_STEP_MS
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a priority name that is not one of low, medium, high, critical.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid priority {0:?}: expected low, medium, high or critical")]
pub struct PriorityInvalid(pub String);

impl FromStr for Priority {
    type Err = PriorityInvalid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_str() == text)
            .ok_or_else(|| PriorityInvalid(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_key_orders_by_priority_then_fifo() {
        let now = 1_000_000;
        assert!(Priority::High.claim_key(now) < Priority::Medium.claim_key(now));
        assert!(Priority::Medium.claim_key(now) < Priority::Medium.claim_key(now + 1));
    }

    #[test]
    fn claim_key_ages_low_jobs_past_new_critical_ones() {
        let low_queued = 0;
        let critical_queued = 3 * AGEING_STEP_MS + 1;
        assert!(
            Priority::Low.claim_key(low_queued) < Priority::Critical.claim_key(critical_queued)
        );
    }

    #[test]
    fn priority_parse_rejects_unknown_name() {
        assert_eq!(
            "urgent".parse::<Priority>(),
            Err(PriorityInvalid("urgent".into()))
        );
        assert_eq!("high".parse::<Priority>(), Ok(Priority::High));
    }
}
