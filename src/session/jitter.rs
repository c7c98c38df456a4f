//! How long the receive jitter buffers wait for a packet: long enough for a lost packet's
//! retransmission to come back over the publisher's round trip, never less than
//! `transcode.jitter_buffer_ms`. Raised at once when the round trip grows, lowered only
//! after it has stayed shorter for a while, so that the wait does not flap.
//!
//! A lost packet is missed when the next one arrives (up to a frame later, 33 ms at
//! 30 fps), asked for at the next NACK tick (every 20 ms, `peer`), and resent by the
//! publisher: its copy arrives one round trip after the NACK. Should that copy be lost
//! too, a browser sends the packet again no sooner than one round trip after its last
//! send (libwebrtc keeps that distance in its packet history). So the wait is two round
//! trips plus [`MARGIN`] for the miss and the tick.
//!
//! The round trip is the median of the last [`RECENT`] measurements: one check answered
//! late (a busy host) does not move the wait.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The miss (a frame at 30 fps) and the NACK tick, rounded up.
const MARGIN: Duration = Duration::from_millis(60);
/// The longest wait the round trip may ask for (a floor above it still holds): past it a
/// stream is better served by a key frame than by waiting.
const CAP: Duration = Duration::from_millis(1000);
/// Waits are whole multiples of this, so that a few milliseconds more round trip do not
/// change them.
const STEP: Duration = Duration::from_millis(20);
/// Round trips are remembered this long; the wait follows the longest of them, so it
/// is lowered only once every round trip of this span asks for less.
const WINDOW: Duration = Duration::from_secs(30);
/// A lower wait is taken only when it is at least this much lower.
const HYSTERESIS: Duration = Duration::from_millis(60);
/// How many measurements the round trip is the median of.
const RECENT: usize = 5;

/// The jitter buffers' wait for one session.
#[derive(Debug)]
pub struct JitterLatency {
    floor: Duration,
    current: Duration,
    /// The last [`RECENT`] measurements, oldest first.
    recent: VecDeque<Duration>,
    /// Round trips (medians) within the last [`WINDOW`], oldest first.
    samples: VecDeque<(Instant, Duration)>,
}

impl JitterLatency {
    /// Starts at `floor` (`transcode.jitter_buffer_ms`), which the pipelines were built with.
    pub fn new(floor: Duration) -> Self {
        Self {
            floor,
            current: floor,
            recent: VecDeque::with_capacity(RECENT + 1),
            samples: VecDeque::new(),
        }
    }

    /// The wait now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Notes the round trip measured at `now`; the new wait, when it changes.
    pub fn on_round_trip(&mut self, now: Instant, measured: Duration) -> Option<Duration> {
        self.recent.push_back(measured);
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort();
        // The lower median: of two, the shorter.
        let round_trip = sorted[(sorted.len() - 1) / 2];
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, round_trip));
        let longest = self.samples.iter().map(|(_, rtt)| *rtt).max()?;
        let wanted = wait_for(longest).max(self.floor);
        let change = wanted > self.current || wanted + HYSTERESIS <= self.current;
        if !change {
            return None;
        }
        self.current = wanted;
        Some(wanted)
    }
}

/// The wait a round trip asks for: two round trips and the margin, in whole steps,
/// at most [`CAP`].
fn wait_for(round_trip: Duration) -> Duration {
    let wanted = (round_trip * 2 + MARGIN).min(CAP);
    let steps = wanted.as_nanos().div_ceil(STEP.as_nanos());
    STEP * u32::try_from(steps).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(200);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_short_round_trip_keeps_the_floor() {
        let mut latency = JitterLatency::new(FLOOR);
        let start = Instant::now();
        for second in 0..10 {
            assert_eq!(
                latency.on_round_trip(start + Duration::from_secs(second), ms(5)),
                None
            );
        }
        assert_eq!(latency.current(), FLOOR);
    }

    #[test]
    fn a_long_round_trip_raises_the_wait_at_once() {
        let mut latency = JitterLatency::new(FLOOR);
        // 2 × 160 + 60 = 380 ms.
        assert_eq!(
            latency.on_round_trip(Instant::now(), ms(160)),
            Some(ms(380))
        );
        assert_eq!(latency.current(), ms(380));
    }

    #[test]
    fn the_wait_comes_in_steps_and_has_a_cap() {
        assert_eq!(wait_for(ms(161)), ms(400));
        assert_eq!(wait_for(ms(170)), ms(400));
        assert_eq!(wait_for(ms(2000)), CAP);
    }

    #[test]
    fn a_floor_above_the_cap_still_holds() {
        let mut latency = JitterLatency::new(ms(1500));
        assert_eq!(latency.on_round_trip(Instant::now(), ms(900)), None);
        assert_eq!(latency.current(), ms(1500));
    }

    #[test]
    fn the_wait_is_lowered_only_when_the_window_is_all_shorter() {
        let mut latency = JitterLatency::new(FLOOR);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(latency.on_round_trip(at(0), ms(160)), Some(ms(380)));
        // Jitter between measurements: the wait rises to the longer ones' and stays.
        for s in 1..=30 {
            let rtt = if s % 2 == 0 { ms(150) } else { ms(165) };
            if let Some(wait) = latency.on_round_trip(at(s), rtt) {
                assert_eq!(wait, ms(400), "at {s} s");
            }
        }
        assert_eq!(latency.current(), ms(400));
        // Shorter round trips from 31 s on: the median is short from 33 s, and the wait
        // holds while the window still has a long one (32 s's), then drops once.
        let mut changes = Vec::new();
        for s in 31..=100 {
            if let Some(wait) = latency.on_round_trip(at(s), ms(20)) {
                changes.push((s, wait));
            }
        }
        assert_eq!(changes, vec![(63, FLOOR)]);
    }

    #[test]
    fn one_late_answer_does_not_move_the_wait() {
        let mut latency = JitterLatency::new(FLOOR);
        let start = Instant::now();
        for s in 0..10 {
            let rtt = if s == 5 { ms(1100) } else { ms(10) };
            assert_eq!(
                latency.on_round_trip(start + Duration::from_secs(s), rtt),
                None
            );
        }
    }

    #[test]
    fn a_slightly_shorter_round_trip_does_not_lower_the_wait() {
        let mut latency = JitterLatency::new(FLOOR);
        let start = Instant::now();
        assert_eq!(latency.on_round_trip(start, ms(160)), Some(ms(380)));
        // 2 × 140 + 60 = 340 ms: only 40 ms lower.
        for s in 31..100 {
            assert_eq!(
                latency.on_round_trip(start + Duration::from_secs(s), ms(140)),
                None
            );
        }
        assert_eq!(latency.current(), ms(380));
    }
}
