//! When to ask the publisher for a key frame: at once on loss, at most every half
//! second (a request that comes sooner waits for the interval); when a muxer's key unit
//! is due (passed through, the publisher makes every key frame), and again every half
//! second until a key frame at or after the time wanted has arrived; and, passed
//! through, when none has come for too long. Plain data: the session feeds it times and
//! asks the publisher when it says so.

use std::time::Duration;
use tokio::time::Instant;

/// Fewest milliseconds between two key-frame requests to the publisher.
pub(super) const REQUEST_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub(super) struct KeyframeSchedule {
    last_request: Option<Instant>,
    /// The running times at or after which a key frame is wanted, and when to ask for
    /// each; earliest first. Bounded: a muxer asks for its next once its last has come.
    due: Vec<(u64, Instant)>,
}

impl KeyframeSchedule {
    /// The publisher was asked at `now`.
    pub(super) fn asked(&mut self, now: Instant) {
        self.last_request = Some(now);
    }

    /// Loss the stream cannot repair, at the pipeline's `running_time`: true when the
    /// publisher is to be asked now; otherwise the request waits for the interval to be
    /// over, unless a key frame comes first.
    pub(super) fn on_loss(
        &mut self,
        now: Instant,
        running_time: Option<u64>,
        last_key_frame: Option<u64>,
    ) -> bool {
        let Some(next) = self
            .last_request
            .map(|at| at + REQUEST_INTERVAL)
            .filter(|next| *next > now)
        else {
            return true;
        };
        if let Some(running_time) = running_time {
            self.forget_arrived(last_key_frame);
            if !self.due.iter().any(|(wanted, _)| *wanted <= running_time) {
                self.push(running_time, next);
            }
        }
        false
    }

    /// A muxer needs a key frame at or after the running time `wanted`, to be asked for
    /// at `at`.
    pub(super) fn on_due(&mut self, wanted: u64, at: Instant) {
        self.push(wanted, at);
    }

    /// When the earliest request is due, if one is waiting.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(_, at)| *at)
    }

    /// The earliest request's time has come: true when the publisher is to be asked (no
    /// key frame at or after the time wanted has arrived); it is then due again after the
    /// interval.
    pub(super) fn fire(&mut self, now: Instant, last_key_frame: Option<u64>) -> bool {
        self.forget_arrived(last_key_frame);
        let Some(first) = self.due.first_mut() else {
            return false;
        };
        if first.1 > now {
            return false;
        }
        first.1 = now + REQUEST_INTERVAL;
        self.due.sort_by_key(|(_, at)| *at);
        true
    }

    /// No request is waiting, no key frame has come for `since_key_frame`, at least
    /// `interval`, and the publisher was not asked within that time: it is to be asked.
    pub(super) fn overdue(
        &self,
        now: Instant,
        since_key_frame: Duration,
        interval: Duration,
    ) -> bool {
        let asked_lately = self
            .last_request
            .is_some_and(|at| now.duration_since(at) < interval.min(since_key_frame));
        self.due.is_empty() && since_key_frame >= interval && !asked_lately
    }

    fn forget_arrived(&mut self, last_key_frame: Option<u64>) {
        self.due
            .retain(|(wanted, _)| last_key_frame.is_none_or(|at| at < *wanted));
    }

    fn push(&mut self, wanted: u64, at: Instant) {
        self.due.push((wanted, at));
        self.due.sort_by_key(|(_, at)| *at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn loss_asks_at_once_then_waits_for_the_interval() {
        let start = Instant::now();
        let mut s = KeyframeSchedule::default();
        assert!(s.on_loss(start, Some(1_000), None));
        s.asked(start);
        // Too soon: due when the interval is over, once however often it is asked.
        assert!(!s.on_loss(start + 100 * MS, Some(2_000), None));
        assert!(!s.on_loss(start + 200 * MS, Some(3_000), None));
        assert_eq!(s.next_due(), Some(start + REQUEST_INTERVAL));
        assert!(!s.fire(start + 400 * MS, None), "not due yet");
        assert!(
            s.fire(start + REQUEST_INTERVAL, Some(1_500)),
            "no key frame since"
        );
        assert_eq!(s.next_due(), Some(start + 2 * REQUEST_INTERVAL));
        // A key frame after the time wanted ends it.
        assert!(!s.fire(start + 2 * REQUEST_INTERVAL, Some(2_000)));
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn muxers_key_units_are_asked_for_in_order_until_they_come() {
        let start = Instant::now();
        let mut s = KeyframeSchedule::default();
        s.on_due(4_000, start + 2_000 * MS);
        s.on_due(2_000, start + 1_000 * MS);
        assert_eq!(s.next_due(), Some(start + 1_000 * MS));
        assert!(s.fire(start + 1_000 * MS, Some(0)));
        assert!(!s.fire(start + 1_500 * MS, Some(2_100)), "it came");
        assert_eq!(s.next_due(), Some(start + 2_000 * MS));
        assert!(s.fire(start + 2_000 * MS, Some(2_100)));
    }

    #[test]
    fn a_missing_key_frame_is_overdue_only_when_nothing_waits_for_it() {
        let start = Instant::now();
        let mut s = KeyframeSchedule::default();
        let interval = 2_500 * MS;
        assert!(!s.overdue(start, 2_000 * MS, interval));
        assert!(s.overdue(start, 3_000 * MS, interval));
        s.asked(start);
        assert!(
            !s.overdue(start + 1_000 * MS, 4_000 * MS, interval),
            "asked lately"
        );
        s.on_due(9_000, start + 5_000 * MS);
        assert!(
            !s.overdue(start + 3_000 * MS, 6_000 * MS, interval),
            "a muxer waits"
        );
    }
}
