//! The rollout policy and the two pure functions that drive every jobs engine:
//! [`RolloutPolicy::admit`] (how many more devices may start now) and
//! [`RolloutPolicy::decide`] (continue, or abort with the reason).
//!
//! Defaults are the original requirement: at most 10 devices in flight; abort when more than
//! 5 % of executed devices failed (judged once 10 have finished) or when more than 10 failed
//! in absolute terms; 30-minute in-progress timeout; no retries. Ranges are AWS IoT Jobs'.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a rollout proceeds and when it stops itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct RolloutPolicy {
    /// Devices updating at the same time (1–1000).
    pub max_in_flight: u32,
    /// Devices started per minute at most (1–1000, AWS `maximumPerMinute`).
    pub max_per_minute: Option<u32>,
    /// AWS-style exponential ramp of the start rate.
    pub exponential_ramp: Option<ExponentialRamp>,
    pub abort: AbortRule,
    /// A device in progress longer than this times out (1–10080 minutes).
    pub in_progress_timeout_minutes: u32,
    pub retries: RetryPolicy,
    /// When the rollout aborts, roll the devices it already moved back to the version each ran
    /// before, by a linked rollout (`Rollout::revert_of`). Off by default.
    pub revert_on_abort: bool,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            max_in_flight: 10,
            max_per_minute: None,
            exponential_ramp: None,
            abort: AbortRule::default(),
            in_progress_timeout_minutes: 30,
            retries: RetryPolicy::default(),
            revert_on_abort: false,
        }
    }
}

/// AWS `exponentialRate`: start at `base_rate_per_minute`, multiply by `increment_factor`
/// each time `increase_after` more devices were notified or succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExponentialRamp {
    /// 1–1000.
    pub base_rate_per_minute: u32,
    /// 1.1–5, one decimal place at most.
    pub increment_factor: f64,
    pub increase_after: RampCriterion,
}

/// When the ramp's rate increases (AWS `rateIncreaseCriteria`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RampCriterion {
    /// After every N devices notified (started), 1–1,000,000.
    Notified(u32),
    /// After every N devices succeeded, 1–1,000,000.
    Succeeded(u32),
}

/// When a rollout aborts itself. Failures are FAILED, REJECTED and TIMED_OUT outcomes that
/// no retry remains for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct AbortRule {
    /// Abort when failures exceed this share of executed devices (0–100, AWS `thresholdPercentage`).
    pub failure_percent: f64,
    /// The percentage is judged only once this many devices finished (AWS `minNumberOfExecutedThings`, ≥ 1).
    pub min_executed: u32,
    /// Abort when failures exceed this count, whatever the share.
    pub max_failures: Option<u32>,
}

impl Default for AbortRule {
    fn default() -> Self {
        AbortRule { failure_percent: 5.0, min_executed: 10, max_failures: Some(10) }
    }
}

/// Retries for failed and timed-out devices (AWS `jobExecutionsRetryConfig`, 0–10 each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct RetryPolicy {
    pub failed: u8,
    pub timed_out: u8,
}

/// What a jobs engine knows about one rollout when it asks the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStats {
    pub total: u32,
    pub queued: u32,
    pub in_progress: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub rejected: u32,
    pub timed_out: u32,
    pub canceled: u32,
    /// Devices started so far (AWS "notified").
    pub started: u32,
    /// Start times the engine remembers; `admit` counts those in the minute before `now`.
    pub recent_starts: Vec<DateTime<Utc>>,
}

impl RolloutStats {
    /// Devices that ended in failure.
    pub fn failures(&self) -> u32 {
        self.failed + self.rejected + self.timed_out
    }

    /// Devices that finished, successfully or not.
    pub fn executed(&self) -> u32 {
        self.succeeded + self.failures()
    }
}

/// The policy's verdict after an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum Decision {
    Continue,
    Abort { reason: String },
}

impl RolloutPolicy {
    /// Checks every value against AWS IoT Jobs' documented ranges.
    pub fn validate(&self) -> Result<()> {
        fn range(what: &'static str, v: u64, lo: u64, hi: u64) -> Result<()> {
            if v < lo || v > hi {
                return Err(Error::invalid(what, v.to_string(), format!("must be between {lo} and {hi}")));
            }
            Ok(())
        }
        range("max_in_flight", self.max_in_flight.into(), 1, 1000)?;
        if let Some(m) = self.max_per_minute {
            range("max_per_minute", m.into(), 1, 1000)?;
        }
        if let Some(r) = &self.exponential_ramp {
            range("base_rate_per_minute", r.base_rate_per_minute.into(), 1, 1000)?;
            let f = r.increment_factor;
            let tenths = (f * 10.0).round();
            if !(1.1..=5.0).contains(&f) || (f * 10.0 - tenths).abs() > 1e-9 {
                return Err(Error::invalid(
                    "increment_factor",
                    f.to_string(),
                    "must be between 1.1 and 5 with at most one decimal place",
                ));
            }
            let (RampCriterion::Notified(n) | RampCriterion::Succeeded(n)) = r.increase_after;
            range("rate increase threshold", n.into(), 1, 1_000_000)?;
            if let Some(m) = self.max_per_minute
                && m < r.base_rate_per_minute
            {
                return Err(Error::invalid("max_per_minute", m.to_string(), "must be at least the ramp's base rate"));
            }
        }
        let p = self.abort.failure_percent;
        if !(0.0..=100.0).contains(&p) || !p.is_finite() {
            return Err(Error::invalid("failure_percent", p.to_string(), "must be between 0 and 100"));
        }
        range("min_executed", self.abort.min_executed.into(), 1, 2_147_483_647)?;
        if let Some(m) = self.abort.max_failures {
            range("max_failures", m.into(), 0, 1_000_000)?;
        }
        range("in_progress_timeout_minutes", self.in_progress_timeout_minutes.into(), 1, 10_080)?;
        range("retries.failed", self.retries.failed.into(), 0, 10)?;
        range("retries.timed_out", self.retries.timed_out.into(), 0, 10)?;
        Ok(())
    }

    /// The start rate per minute in force, if any limits it.
    pub fn rate_per_minute(&self, stats: &RolloutStats) -> Option<u32> {
        let ramp = self.exponential_ramp.as_ref().map(|r| {
            let (count, step) = match r.increase_after {
                RampCriterion::Notified(n) => (stats.started, n),
                RampCriterion::Succeeded(n) => (stats.succeeded, n),
            };
            let steps = count / step.max(1);
            let rate = f64::from(r.base_rate_per_minute) * r.increment_factor.powi(steps.min(1000) as i32);
            rate.min(f64::from(u32::MAX)).floor() as u32
        });
        match (ramp, self.max_per_minute) {
            (Some(r), Some(m)) => Some(r.min(m)),
            (r, m) => r.or(m),
        }
    }

    /// How many more devices may start at `now`: bounded by the devices still queued, the
    /// free in-flight slots, and the start rate over the last minute.
    pub fn admit(&self, stats: &RolloutStats, now: DateTime<Utc>) -> u32 {
        let free = self.max_in_flight.saturating_sub(stats.in_progress);
        let mut n = stats.queued.min(free);
        if let Some(rate) = self.rate_per_minute(stats) {
            let window_start = now - Duration::minutes(1);
            let recent = stats.recent_starts.iter().filter(|t| **t > window_start && **t <= now).count();
            n = n.min(rate.saturating_sub(u32::try_from(recent).unwrap_or(u32::MAX)));
        }
        n
    }

    /// Continue, or abort with the reason, given the outcomes so far.
    pub fn decide(&self, stats: &RolloutStats) -> Decision {
        let failures = stats.failures();
        let executed = stats.executed();
        if let Some(max) = self.abort.max_failures
            && failures > max
        {
            return Decision::Abort { reason: format!("{failures} devices failed, more than the limit of {max}") };
        }
        if executed >= self.abort.min_executed && executed > 0 {
            let share = f64::from(failures) * 100.0 / f64::from(executed);
            if share > self.abort.failure_percent {
                return Decision::Abort {
                    reason: format!(
                        "{failures} of {executed} executed devices failed ({}), more than {} %",
                        Percent(share),
                        Percent(self.abort.failure_percent).bare()
                    ),
                };
            }
        }
        Decision::Continue
    }
}

/// Prints a percentage without trailing zeros: 18.75 %, 5 %.
struct Percent(f64);

impl Percent {
    fn bare(&self) -> String {
        let s = format!("{:.2}", self.0);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", self.bare())
    }
}

impl fmt::Display for RolloutPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {} in flight", self.max_in_flight)?;
        if let Some(m) = self.max_per_minute {
            write!(f, ", at most {m}/min")?;
        }
        if let Some(r) = &self.exponential_ramp {
            let (what, n) = match r.increase_after {
                RampCriterion::Notified(n) => ("notified", n),
                RampCriterion::Succeeded(n) => ("succeeded", n),
            };
            write!(f, ", ramp from {}/min x{} every {n} {what}", r.base_rate_per_minute, r.increment_factor)?;
        }
        write!(
            f,
            "; abort above {} failed (after {} executed)",
            Percent(self.abort.failure_percent),
            self.abort.min_executed
        )?;
        if let Some(m) = self.abort.max_failures {
            write!(f, " or above {m} failures")?;
        }
        write!(f, "; timeout {} min", self.in_progress_timeout_minutes)?;
        if self.retries != RetryPolicy::default() {
            write!(f, "; retries {} failed / {} timed out", self.retries.failed, self.retries.timed_out)?;
        }
        if self.revert_on_abort {
            write!(f, "; on abort, moved devices are rolled back")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    /// A tiny batch-driven engine over `admit`/`decide`, enough to replay scenarios.
    struct Sim {
        policy: RolloutPolicy,
        stats: RolloutStats,
        aborted: Option<String>,
    }

    impl Sim {
        fn new(total: u32) -> Self {
            Sim {
                policy: RolloutPolicy::default(),
                stats: RolloutStats { total, queued: total, ..Default::default() },
                aborted: None,
            }
        }
        fn start_batch(&mut self, now: DateTime<Utc>) -> u32 {
            if self.aborted.is_some() {
                return 0;
            }
            let n = self.policy.admit(&self.stats, now);
            self.stats.queued -= n;
            self.stats.in_progress += n;
            self.stats.started += n;
            self.stats.recent_starts.extend(std::iter::repeat_n(now, n as usize));
            n
        }
        fn outcome(&mut self, ok: bool) {
            self.stats.in_progress -= 1;
            if ok {
                self.stats.succeeded += 1;
            } else {
                self.stats.failed += 1;
            }
        }
        fn judge(&mut self) {
            if let Decision::Abort { reason } = self.policy.decide(&self.stats) {
                self.aborted = Some(reason);
                self.stats.canceled += self.stats.queued;
                self.stats.queued = 0;
            }
        }
    }

    #[test]
    fn original_scenario_aborts_and_the_rest_never_start() {
        // 100 devices. Batch 1: 10 start, all succeed. Batch 2: 6 start (the operator's
        // smaller second wave is modelled by stopping the sim after 6); 3 succeed, 3 fail:
        // 13 successes and 3 failures = 18.75 % > 5 % → abort; 84 devices never start.
        let mut sim = Sim::new(100);
        assert_eq!(sim.start_batch(t0()), 10);
        for _ in 0..10 {
            sim.outcome(true);
        }
        sim.judge();
        assert!(sim.aborted.is_none());
        // Second wave: outcomes arrive together, then the policy is asked once.
        sim.stats.queued -= 6;
        sim.stats.in_progress += 6;
        sim.stats.started += 6;
        for ok in [true, true, true, false, false, false] {
            sim.outcome(ok);
        }
        sim.judge();
        let reason = sim.aborted.clone().expect("must abort");
        assert!(reason.contains("18.75 %") && reason.contains("3 of 16"), "{reason}");
        assert_eq!(sim.stats.canceled, 84);
        assert_eq!(sim.start_batch(t0()), 0, "nothing starts after an abort");
        assert_eq!(sim.stats.started, 16);
    }

    #[test]
    fn percentage_waits_for_min_executed() {
        let p = RolloutPolicy::default();
        let mut s = RolloutStats { total: 100, succeeded: 8, failed: 1, ..Default::default() };
        assert_eq!(p.decide(&s), Decision::Continue, "9 executed < 10");
        s.succeeded = 9;
        assert!(matches!(p.decide(&s), Decision::Abort { .. }), "1 of 10 = 10 % > 5 %");
        // Exactly 5 % does not abort: the rule is "more than".
        let s = RolloutStats { total: 100, succeeded: 19, failed: 1, ..Default::default() };
        assert_eq!(p.decide(&s), Decision::Continue);
    }

    #[test]
    fn absolute_failures_abort_even_at_a_low_share() {
        let p = RolloutPolicy::default();
        let s = RolloutStats { total: 10_000, succeeded: 5_000, failed: 10, ..Default::default() };
        assert_eq!(p.decide(&s), Decision::Continue, "10 is not more than 10");
        let s = RolloutStats {
            total: 10_000,
            succeeded: 5_000,
            failed: 6,
            timed_out: 3,
            rejected: 2,
            ..Default::default()
        };
        let Decision::Abort { reason } = p.decide(&s) else { panic!("must abort") };
        assert!(reason.contains("11 devices failed"), "{reason}");
    }

    #[test]
    fn admit_respects_in_flight_queue_and_rate() {
        let mut p = RolloutPolicy::default();
        let s = RolloutStats { total: 100, queued: 95, in_progress: 7, ..Default::default() };
        assert_eq!(p.admit(&s, t0()), 3);
        let s = RolloutStats { total: 100, queued: 2, in_progress: 0, ..Default::default() };
        assert_eq!(p.admit(&s, t0()), 2);
        p.max_per_minute = Some(4);
        let s = RolloutStats {
            total: 100,
            queued: 90,
            recent_starts: vec![
                t0() - Duration::seconds(90),
                t0() - Duration::seconds(30),
                t0() - Duration::seconds(5),
            ],
            ..Default::default()
        };
        assert_eq!(p.admit(&s, t0()), 2, "two of the three starts fall in the last minute");
    }

    #[test]
    fn exponential_ramp_grows_and_is_capped() {
        let p = RolloutPolicy {
            max_in_flight: 1000,
            max_per_minute: Some(100),
            exponential_ramp: Some(ExponentialRamp {
                base_rate_per_minute: 10,
                increment_factor: 2.0,
                increase_after: RampCriterion::Succeeded(10),
            }),
            ..Default::default()
        };
        p.validate().unwrap();
        let at = |succeeded| p.rate_per_minute(&RolloutStats { succeeded, ..Default::default() });
        assert_eq!(at(0), Some(10));
        assert_eq!(at(10), Some(20));
        assert_eq!(at(25), Some(40));
        assert_eq!(at(1000), Some(100));
    }

    #[test]
    fn validation_uses_aws_ranges() {
        assert!(RolloutPolicy::default().validate().is_ok());
        let bad = [
            RolloutPolicy { max_in_flight: 0, ..Default::default() },
            RolloutPolicy { max_per_minute: Some(1001), ..Default::default() },
            RolloutPolicy { in_progress_timeout_minutes: 0, ..Default::default() },
            RolloutPolicy { in_progress_timeout_minutes: 10_081, ..Default::default() },
            RolloutPolicy { retries: RetryPolicy { failed: 11, timed_out: 0 }, ..Default::default() },
            RolloutPolicy { abort: AbortRule { failure_percent: 101.0, ..Default::default() }, ..Default::default() },
            RolloutPolicy { abort: AbortRule { min_executed: 0, ..Default::default() }, ..Default::default() },
            RolloutPolicy {
                exponential_ramp: Some(ExponentialRamp {
                    base_rate_per_minute: 10,
                    increment_factor: 1.05,
                    increase_after: RampCriterion::Notified(5),
                }),
                ..Default::default()
            },
            RolloutPolicy {
                exponential_ramp: Some(ExponentialRamp {
                    base_rate_per_minute: 10,
                    increment_factor: 6.0,
                    increase_after: RampCriterion::Notified(5),
                }),
                ..Default::default()
            },
            RolloutPolicy {
                exponential_ramp: Some(ExponentialRamp {
                    base_rate_per_minute: 10,
                    increment_factor: 2.0,
                    increase_after: RampCriterion::Notified(0),
                }),
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }

    #[test]
    fn summary_reads_like_the_defaults() {
        let s = RolloutPolicy::default().to_string();
        assert_eq!(
            s,
            "at most 10 in flight; abort above 5 % failed (after 10 executed) or above 10 failures; timeout 30 min"
        );
    }
}
