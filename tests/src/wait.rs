//! Bounded polling: the only place the harness sleeps.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long [`wait_until`] sleeps between two polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL_INTERVAL`] until it returns true or `timeout`
/// has passed. The condition is always evaluated at least once, and once
/// more at the deadline, so a zero timeout means "check now". On timeout the
/// error names `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    let deadline = start + timeout;
    // The count bound is redundant with the deadline but makes the loop
    // bounded even if the clock misbehaves.
    let max_polls = timeout.as_millis() / POLL_INTERVAL.as_millis() + 2;
    for _ in 0..max_polls {
        if cond() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
    if cond() {
        return Ok(());
    }
    Err(Error::Timeout {
        what: what.to_string(),
        after: start.elapsed(),
    })
}

/// Like [`wait_until`], for a probe that yields a value once ready.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let mut found = None;
    wait_until(timeout, what, || {
        found = probe();
        found.is_some()
    })?;
    found.ok_or_else(|| Error::other(format!("{what}: probe succeeded but gave no value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_with_name() {
        let err = wait_until(Duration::from_millis(50), "the impossible", || false)
            .expect_err("a false condition must time out");
        assert!(err.to_string().contains("the impossible"), "{err}");
    }

    #[test]
    fn returns_once_true() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), "third poll", || {
            n += 1;
            n >= 3
        })
        .expect("condition becomes true");
        assert_eq!(n, 3);
    }

    #[test]
    fn wait_for_yields_value() {
        let v = wait_for(Duration::from_secs(1), "a value", || Some(7)).expect("value");
        assert_eq!(v, 7);
    }
}
