//! Which finished deliveries to prune: a route's history limits, never shorter than the dedup
//! window. Pure: the pruner reads its cache and deletes.

use std::time::Duration;

use crate::api::DeliveryPhase;
use crate::route::history::HistoryLimits;

/// A finished delivery, as pruning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub name: String,
    pub phase: DeliveryPhase,
    /// When it finished (or was created, if that is all we know).
    pub at: jiff::Timestamp,
    /// When its event was received (the record created).
    pub received: jiff::Timestamp,
    /// The event's own signed time, if it had one.
    pub event_time: Option<jiff::Timestamp>,
    /// Orders deliveries that finished within the same second (timestamps have second
    /// precision): the API server's resourceVersion of its last write, where it is a number.
    pub revision: u64,
}

/// The deliveries to delete: the oldest beyond each phase's limit, and any older than
/// `max_age`, but none received within `dedup_window` and none whose event the receiver
/// would still accept (its time within `replay_window`, see `replay.rs`): a record's name is
/// what makes a redelivered event a duplicate, so it outlives any shorter history. Ties
/// (timestamps have second precision) are broken by revision, then name, so every round
/// chooses alike.
pub fn to_prune(
    mut finished: Vec<Finished>,
    limits: &HistoryLimits,
    now: jiff::Timestamp,
    dedup_window: Duration,
    replay_window: Duration,
) -> Vec<String> {
    finished.sort_by(|a, b| {
        (b.at, b.revision)
            .cmp(&(a.at, a.revision))
            .then_with(|| b.name.cmp(&a.name))
    });
    let max_age =
        jiff::SignedDuration::try_from(limits.max_age).unwrap_or(jiff::SignedDuration::MAX);
    let window = jiff::SignedDuration::try_from(dedup_window).unwrap_or(jiff::SignedDuration::MAX);
    let mut kept = [0usize; 2];
    let mut prune = Vec::new();
    for d in finished {
        let (slot, limit) = match d.phase {
            // A superseded delivery called nothing, and failed nowhere.
            DeliveryPhase::Succeeded | DeliveryPhase::Superseded => (0, limits.succeeded),
            _ => (1, limits.failed),
        };
        let beyond = kept[slot] >= limit || now.duration_since(d.at) > max_age;
        let replayable = crate::replay::replayable(d.event_time, replay_window, now);
        if beyond && now.duration_since(d.received) >= window && !replayable {
            prune.push(d.name);
        } else {
            kept[slot] += 1;
        }
    }
    prune
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keep `succeeded` and `failed` deliveries, none older than `max_age_secs`.
    fn keep(succeeded: usize, failed: usize, max_age_secs: u64) -> HistoryLimits {
        HistoryLimits {
            succeeded,
            failed,
            max_age: Duration::from_secs(max_age_secs),
        }
    }

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn d(name: &str, phase: DeliveryPhase, secs: i64) -> Finished {
        Finished {
            name: name.into(),
            phase,
            at: at(secs),
            received: at(secs),
            event_time: None,
            revision: 0,
        }
    }

    #[test]
    fn keeps_the_newest_per_phase_and_drops_the_rest() {
        let limits = keep(2, 1, 3600);
        let items = vec![
            d("s1", DeliveryPhase::Succeeded, 1),
            d("s3", DeliveryPhase::Succeeded, 3),
            d("f1", DeliveryPhase::Failed, 1),
            d("s2", DeliveryPhase::Succeeded, 2),
            d("f2", DeliveryPhase::Failed, 2),
        ];
        let mut pruned = to_prune(items, &limits, at(10), Duration::ZERO, Duration::ZERO);
        pruned.sort();
        assert_eq!(pruned, ["f1", "s1"]);
    }

    #[test]
    fn the_last_written_of_a_second_is_the_newest() {
        let limits = keep(1, 1, 3600);
        let mut first = d("z-first", DeliveryPhase::Succeeded, 5);
        first.revision = 10;
        let mut last = d("a-last", DeliveryPhase::Succeeded, 5);
        last.revision = 12;
        assert_eq!(
            to_prune(
                vec![first, last],
                &limits,
                at(10),
                Duration::ZERO,
                Duration::ZERO
            ),
            ["z-first"]
        );
    }

    #[test]
    fn ties_are_broken_by_name_so_every_round_agrees() {
        let limits = keep(1, 1, 3600);
        let items = vec![
            d("a", DeliveryPhase::Succeeded, 5),
            d("b", DeliveryPhase::Succeeded, 5),
        ];
        let mut reversed = items.clone();
        reversed.reverse();
        assert_eq!(
            to_prune(items, &limits, at(10), Duration::ZERO, Duration::ZERO),
            ["a"]
        );
        assert_eq!(
            to_prune(reversed, &limits, at(10), Duration::ZERO, Duration::ZERO),
            ["a"]
        );
    }

    #[test]
    fn records_inside_the_dedup_window_outlive_the_history_limits() {
        let limits = keep(1, 1, 3600);
        let items = vec![
            d("old", DeliveryPhase::Succeeded, 0),
            d("mid", DeliveryPhase::Succeeded, 50),
            d("new", DeliveryPhase::Succeeded, 90),
        ];
        let window = Duration::from_secs(60);
        // "mid" is beyond the count, but was received only 50 s ago.
        assert_eq!(
            to_prune(items.clone(), &limits, at(100), window, Duration::ZERO),
            ["old"]
        );
        assert_eq!(
            to_prune(items, &limits, at(200), window, Duration::ZERO),
            ["mid", "old"],
            "once the window has passed, the limits apply"
        );
    }

    #[test]
    fn drops_what_is_older_than_max_age() {
        let limits = keep(10, 10, 60);
        let pruned = to_prune(
            vec![
                d("old", DeliveryPhase::Succeeded, 0),
                d("new", DeliveryPhase::Failed, 100),
            ],
            &limits,
            at(120),
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(pruned, ["old"]);
    }

    #[test]
    fn keeps_a_record_while_its_event_could_be_replayed() {
        let limits = keep(0, 0, 3600);
        // Received at 0 but dated 200 s ahead (clock skew): within a 100 s replay window
        // until 300, though the dedup window (100 s from receipt) ends at 100.
        let mut ahead = d("ahead", DeliveryPhase::Succeeded, 0);
        ahead.event_time = Some(at(200));
        let mut plain = d("plain", DeliveryPhase::Succeeded, 0);
        plain.event_time = Some(at(0));
        let window = Duration::from_secs(100);
        let pruned = to_prune(vec![ahead.clone(), plain], &limits, at(150), window, window);
        assert_eq!(pruned, ["plain"]);
        assert_eq!(
            to_prune(vec![ahead], &limits, at(301), window, window),
            ["ahead"]
        );
    }
}
