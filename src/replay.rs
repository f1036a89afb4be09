//! The replay window: a signed event is accepted only while its own `time` is recent.
//!
//! A signature proves who sent an event, not when: a captured body verifies forever. Records
//! make a repeat a duplicate only while they are kept, so an event is refused once its `time`
//! is older than the replay window, which the dedup window (how long records are kept) is
//! never shorter than; and the pruner keeps a record while its event could still be
//! accepted. Within the window an event is a duplicate, outside it refused: a captured event
//! never fires twice. Pure.

use std::time::Duration;

/// How far ahead of this replica's clock an event's `time` may be (clock skew).
pub const MAX_FUTURE: Duration = Duration::from_secs(5 * 60);

/// Why an event is outside the replay window. Says nothing of the times compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutsideWindow {
    #[error("event time is older than the replay window")]
    TooOld,
    #[error("event time is too far in the future")]
    InFuture,
    #[error("event has no time; a replay window needs one")]
    NoTime,
    #[error("event time is not an RFC 3339 timestamp")]
    BadTime,
}

impl OutsideWindow {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            OutsideWindow::TooOld => "too_old",
            OutsideWindow::InFuture => "in_future",
            OutsideWindow::NoTime => "no_time",
            OutsideWindow::BadTime => "bad_time",
        }
    }
}

/// Whether an event with `time` may be accepted at `now` under `window` (zero: any time).
pub fn check(
    time: Option<&str>,
    window: Duration,
    now: jiff::Timestamp,
) -> Result<(), OutsideWindow> {
    if window.is_zero() {
        return Ok(());
    }
    let time: jiff::Timestamp = time
        .ok_or(OutsideWindow::NoTime)?
        .parse()
        .map_err(|_| OutsideWindow::BadTime)?;
    let age = now.duration_since(time);
    let window = jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
    let future = jiff::SignedDuration::try_from(MAX_FUTURE).unwrap_or_default();
    if age > window {
        Err(OutsideWindow::TooOld)
    } else if -age > future {
        Err(OutsideWindow::InFuture)
    } else {
        Ok(())
    }
}

/// Whether an event with `time` could still be accepted at `now`: its record must be kept.
pub fn replayable(time: Option<jiff::Timestamp>, window: Duration, now: jiff::Timestamp) -> bool {
    let Some(time) = time else { return false };
    !window.is_zero()
        && now.duration_since(time)
            <= jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> jiff::Timestamp {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> String {
        (now() - jiff::SignedDuration::from_secs(secs)).to_string()
    }

    #[test]
    fn the_old_edge() {
        let window = 72 * HOUR;
        let edge = 72 * 3600;
        assert_eq!(check(Some(&ago(edge)), window, now()), Ok(()));
        assert_eq!(
            check(Some(&ago(edge + 1)), window, now()),
            Err(OutsideWindow::TooOld)
        );
        assert_eq!(check(Some(&ago(0)), window, now()), Ok(()));
    }

    #[test]
    fn the_future_edge() {
        let window = 72 * HOUR;
        assert_eq!(check(Some(&ago(-300)), window, now()), Ok(()));
        assert_eq!(
            check(Some(&ago(-301)), window, now()),
            Err(OutsideWindow::InFuture)
        );
    }

    #[test]
    fn offsets_count_and_bad_times_are_refused() {
        let window = HOUR;
        assert_eq!(
            check(Some("2026-11-27T13:30:00+02:00"), window, now()),
            Ok(())
        );
        assert_eq!(
            check(Some("2026-11-27T09:30:00-01:00"), window, now()),
            Err(OutsideWindow::TooOld)
        );
        assert_eq!(check(None, window, now()), Err(OutsideWindow::NoTime));
        assert_eq!(
            check(Some("yesterday"), window, now()),
            Err(OutsideWindow::BadTime)
        );
    }

    #[test]
    fn a_zero_window_accepts_any_time() {
        assert_eq!(
            check(Some(&ago(10 * 365 * 86400)), Duration::ZERO, now()),
            Ok(())
        );
        assert_eq!(check(None, Duration::ZERO, now()), Ok(()));
    }

    #[test]
    fn a_record_is_kept_while_its_event_is_replayable() {
        let t = |secs| Some(now() - jiff::SignedDuration::from_secs(secs));
        assert!(replayable(t(3600), 2 * HOUR, now()));
        assert!(!replayable(t(3 * 3600), 2 * HOUR, now()));
        // Dated ahead of the clock: replayable for longer than its record's age says.
        assert!(replayable(t(-300), 2 * HOUR, now()));
        assert!(!replayable(None, 2 * HOUR, now()));
        assert!(!replayable(t(0), Duration::ZERO, now()));
    }
}
