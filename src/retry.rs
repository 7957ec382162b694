//! The one retry policy: every stage (start-up connects, the reader, the writer, the
//! ownership monitor) asks [`Retrier::decide`] what to do after an error, and sleeps through
//! [`Shutdown`]-aware waits, so a shutdown is never slept through.
//!
//! Transient errors ([`Error::is_retryable`]) are retried with exponential backoff and
//! jitter (`[retry] backoff_base_ms` doubling up to `backoff_max_ms`); everything else
//! stops at once. Start-up connects also give up after `[retry] connect_timeout_ms`.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::Retry;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// Exponential backoff with jitter: `base` doubling per attempt up to `max`, each delay
/// drawn from the upper half of its step so retries from many tables spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(retry: &Retry) -> Self {
        Backoff {
            base: Duration::from_millis(retry.backoff_base_ms),
            max: Duration::from_millis(retry.backoff_max_ms),
            attempt: 0,
        }
    }

    /// The next delay and the attempt number it belongs to.
    pub fn next_delay(&mut self) -> (u32, Duration) {
        self.attempt += 1;
        let cap = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        let jittered = cap.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        (self.attempt, jittered)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after `delay`; this is retry number `attempt`.
    Retry { attempt: u32, delay: Duration },
    /// Give up: the error is permanent, the deadline has passed, or shutdown was asked for.
    Stop,
}

/// The retry policy of one stage.
#[derive(Debug, Clone)]
pub struct Retrier {
    backoff: Backoff,
    /// Transient errors after this instant are not retried (start-up connects).
    deadline: Option<(Instant, Duration)>,
}

impl Retrier {
    /// Retries transient errors for as long as it takes.
    pub fn new(retry: &Retry) -> Self {
        Retrier {
            backoff: Backoff::new(retry),
            deadline: None,
        }
    }

    /// Retries transient errors for `retry.connect_timeout_ms`, then gives up.
    pub fn for_connect(retry: &Retry) -> Self {
        let limit = Duration::from_millis(retry.connect_timeout_ms);
        Retrier {
            backoff: Backoff::new(retry),
            deadline: Some((Instant::now() + limit, limit)),
        }
    }

    pub fn decide(&mut self, err: &Error, shutdown: &Shutdown) -> Decision {
        if !err.is_retryable() || shutdown.requested() {
            return Decision::Stop;
        }
        let (attempt, mut delay) = self.backoff.next_delay();
        if let Some((deadline, _)) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Decision::Stop;
            }
            delay = delay.min(left);
        }
        Decision::Retry { attempt, delay }
    }

    /// After a success: the next error starts from the first delay again.
    pub fn reset(&mut self) {
        self.backoff.reset();
    }

    /// The error to report when giving up: a transient error that ran out of time says so.
    pub fn final_error(&self, err: Error) -> Error {
        match (err, self.deadline) {
            (
                Error::Database {
                    side,
                    context,
                    mut message,
                    code,
                    transient: true,
                },
                Some((deadline, limit)),
            ) if Instant::now() >= deadline => {
                message.push_str(&format!(
                    " (gave up after {:.1} s; retry.connect_timeout_ms sets how long to wait)",
                    limit.as_secs_f64()
                ));
                Error::Database {
                    side,
                    context,
                    message,
                    code,
                    transient: true,
                }
            }
            (e, _) => e,
        }
    }
}

/// Runs `op` until it succeeds or the policy stops, sleeping between attempts (waking on
/// shutdown, which ends the loop with [`Error::Shutdown`] unless the last error was
/// permanent). `on_retry(attempt, delay, error)` runs before each sleep: log it, count it.
pub async fn retry<T, F, Fut>(
    policy: &mut Retrier,
    shutdown: &Shutdown,
    mut op: F,
    mut on_retry: impl FnMut(u32, Duration, &Error),
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        let err = match op().await {
            Ok(v) => {
                policy.reset();
                return Ok(v);
            }
            Err(e) => e,
        };
        match policy.decide(&err, shutdown) {
            Decision::Retry { attempt, delay } => {
                on_retry(attempt, delay, &err);
                if shutdown.sleep(delay).await {
                    return Err(Error::Shutdown);
                }
            }
            Decision::Stop if err.is_retryable() && shutdown.requested() => {
                return Err(Error::Shutdown)
            }
            Decision::Stop => return Err(policy.final_error(err)),
        }
    }
}

/// Runs `connect` until it succeeds, retrying transient failures (server down, refused,
/// restarting) until `[retry] connect_timeout_ms` has passed, or shutdown.
pub async fn connecting<T, F, Fut>(
    settings: &crate::config::Settings,
    shutdown: &Shutdown,
    connect: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut policy = Retrier::for_connect(&settings.retry);
    retry(&mut policy, shutdown, connect, |attempt, delay, e| {
        tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %e, "cannot connect yet; retrying")
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let retry = Retry::default();
        let mut b = Backoff::new(&retry);
        let (_, first) = b.next_delay();
        assert!(first <= Duration::from_millis(retry.backoff_base_ms * 2));
        let max = Duration::from_millis(retry.backoff_max_ms);
        let mut last = Duration::ZERO;
        for _ in 0..30 {
            last = b.next_delay().1;
        }
        assert!(last <= max && last >= max / 2, "{last:?}");
    }

    fn transient() -> Error {
        Error::Database {
            side: crate::error::Side::Target,
            context: "c".into(),
            message: "m".into(),
            code: None,
            transient: true,
        }
    }

    #[test]
    fn permanent_errors_and_shutdown_stop_retries() {
        let s = Shutdown::new();
        let mut r = Retrier::new(&Retry::default());
        assert!(matches!(
            r.decide(&transient(), &s),
            Decision::Retry { attempt: 1, .. }
        ));
        assert_eq!(r.decide(&Error::Other("x".into()), &s), Decision::Stop);
        s.request();
        assert_eq!(r.decide(&transient(), &s), Decision::Stop);
    }

    #[test]
    fn connect_retries_end_at_the_deadline_and_say_so() {
        let retry = Retry {
            connect_timeout_ms: 0,
            ..Retry::default()
        };
        let mut r = Retrier::for_connect(&retry);
        let s = Shutdown::new();
        assert_eq!(r.decide(&transient(), &s), Decision::Stop);
        assert!(r
            .final_error(transient())
            .to_string()
            .contains("gave up after 0.0 s"));
    }
}
