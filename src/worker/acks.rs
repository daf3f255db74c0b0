//! Settles the deliveries of one broker channel, coalescing acks.
//!
//! Each job's handler settles its message when it is done, in whatever order the jobs
//! finish. One task per channel sends the frames: what arrived while it was sending the
//! last ones is settled together. Acks that cover every delivery before them go as one
//! `basic.ack` with `multiple`. An ack behind a job still running waits up to [`HOLD`] for
//! it (jobs end in batches, seldom in their tags' order), then goes alone, so a slow job
//! holds back the others' acks by no more than that. Measured on the e2e bench's RabbitMQ
//! ceiling (docs/BENCHMARKS.md): one ack per 16 messages took the broker 32-36 µs of CPU
//! per message consumed instead of 73-74, and the client 14-17 µs instead of 90-91.
//!
//! A multiple ack names a delivery it acks itself, never one settled before: RabbitMQ
//! closes the channel on an ack of a tag it no longer holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an ack behind a delivery still being handled waits to be sent with it.
const HOLD: Duration = Duration::from_millis(20);

/// What a handler decided for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Ack(u64),
    /// Back to the queue, to be tried again.
    Requeue(u64),
}

/// A frame to send, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Ack { tag: u64, multiple: bool },
    Requeue(u64),
}

/// Which deliveries of a channel are settled. Delivery tags start at 1 and go up by one
/// per delivery on the channel.
#[derive(Debug)]
struct Window {
    /// Every tag below it is settled with the broker.
    frontier: u64,
    /// Tags at or above the frontier settled with the broker already, one by one.
    sent: BTreeSet<u64>,
    /// Acks behind an unsettled delivery, not sent yet, with when they were decided.
    held: BTreeMap<u64, Instant>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            frontier: 1,
            sent: BTreeSet::new(),
            held: BTreeMap::new(),
        }
    }
}

impl Window {
    /// The frames that settle `decisions` (each tag decided once) at `now`, in the order to
    /// send them. Acks behind an unsettled delivery are held until [`HOLD`] after they were
    /// decided.
    fn settle(&mut self, decisions: impl IntoIterator<Item = Decision>, now: Instant) -> Vec<Frame> {
        let mut frames = Vec::new();
        for decision in decisions {
            match decision {
                // First, so no multiple ack below can cover a message to be requeued.
                Decision::Requeue(tag) => {
                    frames.push(Frame::Requeue(tag));
                    self.sent.insert(tag);
                }
                Decision::Ack(tag) => {
                    self.held.insert(tag, now);
                }
            }
        }
        // The settled run from the frontier: its acks go as one, naming the last of them.
        let (mut last, mut count) = (None, 0);
        loop {
            let tag = self.frontier;
            if self.held.remove(&tag).is_some() {
                last = Some(tag);
                count += 1;
            } else if !self.sent.remove(&tag) {
                break;
            }
            self.frontier += 1;
        }
        if let Some(tag) = last {
            frames.push(Frame::Ack {
                tag,
                multiple: count > 1,
            });
        }
        // Behind a delivery still being handled for too long: one by one.
        let due: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, decided)| now.saturating_duration_since(**decided) >= HOLD)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in due {
            self.held.remove(&tag);
            frames.push(Frame::Ack { tag, multiple: false });
            self.sent.insert(tag);
        }
        frames
    }

    /// When the oldest held ack is due.
    fn next_due(&self) -> Option<Instant> {
        self.held.values().min().map(|decided| *decided + HOLD)
    }
}

/// The sending side of a channel's settling task. Cheap to clone.
#[derive(Clone)]
pub(super) struct Acks {
    decisions: mpsc::UnboundedSender<Decision>,
}

impl Acks {
    /// Starts the task that settles `channel`'s deliveries, until [`Settling::finish`].
    pub(super) fn spawn(channel: Channel) -> (Self, Settling) {
        let (decisions, received) = mpsc::unbounded_channel();
        let close = CancellationToken::new();
        let task = tokio::spawn(run(channel, received, close.clone()));
        (
            Self { decisions },
            Settling {
                close,
                task: Some(task),
            },
        )
    }

    /// The duty to settle one delivery. Dropped unsettled (its handler panicked, or the
    /// runtime stopped while it ran), the message goes back to the queue a second later,
    /// so a message that panics its handler every time is not a hot loop.
    pub(super) fn settlement(&self, delivery_tag: u64) -> Settlement {
        Settlement {
            tag: delivery_tag,
            acks: Some(self.clone()),
        }
    }
}

/// The running task of [`Acks::spawn`].
pub(super) struct Settling {
    close: CancellationToken,
    /// `None` once [`Settling::ended`] saw it end.
    task: Option<JoinHandle<()>>,
}

impl Settling {
    /// Resolves if the task ends before [`Settling::finish`] (it panicked).
    pub(super) async fn ended(&mut self) {
        match &mut self.task {
            Some(task) => {
                let _ = task.await;
                self.task = None;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends what was decided so far, held acks included, and ends the task. Decisions
    /// made later (jobs that outlive the shutdown grace) are not sent: the broker returns
    /// those messages to the queue when the connection closes.
    pub(super) async fn finish(self) {
        self.close.cancel();
        let Some(task) = self.task else {
            return;
        };
        if tokio::time::timeout(Duration::from_secs(1), task).await.is_err() {
            tracing::warn!("acks not sent in time; the broker will redeliver those messages");
        }
    }
}

/// One delivery's settling, done once.
pub(super) struct Settlement {
    tag: u64,
    acks: Option<Acks>,
}

impl Settlement {
    pub(super) fn ack(mut self) {
        self.decide(Decision::Ack(self.tag));
    }

    pub(super) fn requeue(mut self) {
        self.decide(Decision::Requeue(self.tag));
    }

    fn decide(&mut self, decision: Decision) {
        if let Some(acks) = self.acks.take() {
            // Fails only once the channel's task has ended, with its connection; the broker
            // then returns the message to the queue itself.
            let _ = acks.decisions.send(decision);
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let Some(acks) = self.acks.take() else {
            return;
        };
        tracing::error!(
            delivery_tag = self.tag,
            "a job's handler ended without settling its message; it goes back to the queue"
        );
        let tag = self.tag;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = acks.decisions.send(Decision::Requeue(tag));
            });
        }
    }
}

async fn run(channel: Channel, mut received: mpsc::UnboundedReceiver<Decision>, close: CancellationToken) {
    let mut window = Window::default();
    let mut decisions = Vec::new();
    loop {
        let due = window.next_due();
        let open = tokio::select! {
            count = received.recv_many(&mut decisions, usize::MAX) => count > 0,
            () = sleep_until(due), if due.is_some() => true,
            () = close.cancelled() => {
                while let Ok(decision) = received.try_recv() {
                    decisions.push(decision);
                }
                false
            }
        };
        // Once closed, what is held goes now.
        let now = if open { Instant::now() } else { Instant::now() + HOLD };
        send(&channel, window.settle(decisions.drain(..), now)).await;
        if !open {
            break;
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
}

async fn send(channel: &Channel, frames: Vec<Frame>) {
    for frame in frames {
        let sent = match frame {
            Frame::Ack { tag, multiple } => channel.basic_ack(tag, BasicAckOptions { multiple }).await,
            Frame::Requeue(tag) => {
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        },
                    )
                    .await
            }
        };
        if let Err(error) = sent {
            // The broker redelivers what was not settled; the request id makes that harmless.
            tracing::warn!(%error, ?frame, "could not settle messages with the broker");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// RabbitMQ's side: the deliveries it holds unsettled, and what became of each.
    struct Broker {
        unsettled: BTreeSet<u64>,
        outcome: BTreeMap<u64, &'static str>,
    }

    impl Broker {
        fn new(deliveries: u64) -> Self {
            Self {
                unsettled: (1..=deliveries).collect(),
                outcome: BTreeMap::new(),
            }
        }

        /// Applies a frame as RabbitMQ does; an unknown tag closes the channel.
        fn take(&mut self, frame: Frame) -> Result<(), String> {
            let (tag, multiple, outcome) = match frame {
                Frame::Ack { tag, multiple } => (tag, multiple, "ack"),
                Frame::Requeue(tag) => (tag, false, "requeue"),
            };
            if !self.unsettled.contains(&tag) {
                return Err(format!("PRECONDITION_FAILED - unknown delivery tag {tag} ({frame:?})"));
            }
            let covered: Vec<u64> = if multiple {
                self.unsettled.range(..=tag).copied().collect()
            } else {
                vec![tag]
            };
            for tag in covered {
                self.unsettled.remove(&tag);
                self.outcome.insert(tag, outcome);
            }
            Ok(())
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn acks_in_order_go_as_one() {
        let mut window = Window::default();
        let frames = window.settle((1..=5).map(Decision::Ack), Instant::now());
        assert_eq!(frames, [Frame::Ack { tag: 5, multiple: true }]);
        assert_eq!(window.frontier, 6);
        assert_eq!(window.next_due(), None);
    }

    #[test]
    fn an_ack_behind_a_running_job_waits_for_it_then_goes_alone() {
        let t0 = Instant::now();
        let mut window = Window::default();
        let frames = window.settle([Decision::Ack(1), Decision::Ack(3), Decision::Ack(4)], t0);
        assert_eq!(
            frames,
            [Frame::Ack {
                tag: 1,
                multiple: false
            }]
        );
        assert_eq!(window.next_due(), Some(t0 + HOLD));
        assert_eq!(window.settle([], t0 + HOLD - ms(1)), []);
        assert_eq!(
            window.settle([], t0 + HOLD),
            [
                Frame::Ack {
                    tag: 3,
                    multiple: false
                },
                Frame::Ack {
                    tag: 4,
                    multiple: false
                },
            ]
        );
        // Once the job in between ends, its ack goes with 5's: 3 and 4 are settled already.
        let frames = window.settle([Decision::Ack(2), Decision::Ack(5)], t0 + ms(50));
        assert_eq!(frames, [Frame::Ack { tag: 5, multiple: true }]);
        assert_eq!(window.frontier, 6);
        assert!(window.sent.is_empty() && window.held.is_empty());
    }

    #[test]
    fn held_acks_go_with_the_run_once_the_gap_fills() {
        let t0 = Instant::now();
        let mut window = Window::default();
        window.settle([Decision::Ack(1), Decision::Ack(3), Decision::Ack(4)], t0);
        let frames = window.settle([Decision::Ack(2)], t0 + ms(5));
        assert_eq!(frames, [Frame::Ack { tag: 4, multiple: true }]);
        assert_eq!(window.next_due(), None);
    }

    #[test]
    fn requeues_go_before_the_multiple_ack_and_it_names_an_acked_tag() {
        use Decision::{Ack, Requeue};
        for (decisions, expected) in [
            (
                [Ack(1), Requeue(2), Ack(3)],
                [Frame::Requeue(2), Frame::Ack { tag: 3, multiple: true }],
            ),
            (
                [Ack(1), Ack(2), Requeue(3)],
                [Frame::Requeue(3), Frame::Ack { tag: 2, multiple: true }],
            ),
        ] {
            let frames = Window::default().settle(decisions, Instant::now());
            assert_eq!(frames, expected, "{decisions:?}");
            let mut broker = Broker::new(3);
            for frame in frames {
                broker.take(frame).expect("the broker takes the frame");
            }
            assert!(broker.unsettled.is_empty());
            assert_eq!(broker.outcome.values().filter(|o| **o == "requeue").count(), 1);
        }
    }

    proptest! {
        /// Whatever order the jobs end in and however their decisions are batched, every
        /// delivery is settled once, as decided, and no frame names a tag the broker no
        /// longer holds.
        #[test]
        fn every_delivery_is_settled_once_as_decided(
            order in Just((1..=60u64).collect::<Vec<_>>()).prop_shuffle(),
            requeued in proptest::collection::btree_set(1..=60u64, 0..10),
            cuts in proptest::collection::vec((1..8usize, 0..30u64), 1..60),
        ) {
            let mut now = Instant::now();
            let mut window = Window::default();
            let mut broker = Broker::new(60);
            let mut decisions = order.iter().map(|&tag| {
                if requeued.contains(&tag) { Decision::Requeue(tag) } else { Decision::Ack(tag) }
            });
            let mut frames = 0;
            for (size, pause) in cuts.iter().cycle() {
                let batch: Vec<Decision> = decisions.by_ref().take(*size).collect();
                if batch.is_empty() {
                    break;
                }
                now += ms(*pause);
                for frame in window.settle(batch, now) {
                    broker.take(frame).map_err(TestCaseError::fail)?;
                    frames += 1;
                }
                prop_assert!(window.next_due().is_none_or(|due| due > now), "an ack held past HOLD");
            }
            // The channel's last senders gone: what is held goes.
            for frame in window.settle([], now + HOLD) {
                broker.take(frame).map_err(TestCaseError::fail)?;
                frames += 1;
            }
            prop_assert!(broker.unsettled.is_empty(), "unsettled: {:?}", broker.unsettled);
            for tag in 1..=60u64 {
                let expected = if requeued.contains(&tag) { "requeue" } else { "ack" };
                prop_assert_eq!(broker.outcome[&tag], expected);
            }
            prop_assert!(frames <= 60);
            prop_assert_eq!(window.frontier, 61);
            prop_assert!(window.sent.is_empty() && window.held.is_empty());
        }
    }
}
