//! Activation events for the admin API's `Events` stream (`kmsctl events [--follow]`).
//!
//! [`EventHub`] is a [`HostObserver`]: the KMS listener hands it every processed activation
//! request (Microsoft's event 12290 fields). It numbers them, keeps the last
//! [`RING_CAPACITY`] in a ring buffer for callers that ask for recent events, and broadcasts
//! each to the callers following the stream. A follower that reads too slowly loses events
//! rather than slowing the listener down: it is told how many it missed.
//!
//! Events are per node: each node sees the activations it answered.
//!
//! [`WithEvents`] composes the hub with another observer (the metrics), since the listener
//! takes one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use kms_api::admin::v1 as pb;
use kms_host::{ActivationEvent, HostObserver};
use tokio::sync::broadcast;

/// How many recent events a node keeps for `kmsctl events`.
pub const RING_CAPACITY: usize = 1000;

/// Live events buffered per following caller before it starts missing some.
const FOLLOW_BUFFER: usize = 1024;

/// The activation events of one node (see the module doc). Cheap to clone; clones share the
/// buffer.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Numbered>>,
}

struct Ring {
    next_sequence: u64,
    events: VecDeque<Arc<Numbered>>,
}

/// An event as the hub keeps it: the listener's own form, numbered and stamped. It becomes a
/// [`pb::ActivationEvent`] (a dozen strings) only when someone reads it, which most events
/// never are: every activation passes through here.
struct Numbered {
    sequence: u64,
    time_unix_ms: i64,
    event: ActivationEvent,
}

impl Numbered {
    fn to_proto(&self, node_id: u64) -> pb::ActivationEvent {
        to_proto(&self.event, node_id, self.sequence, self.time_unix_ms)
    }
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("node_id", &self.inner.node_id)
            .field("followers", &self.inner.live.receiver_count())
            .finish_non_exhaustive()
    }
}

/// A caller's view of the events: the recent ones, then the live ones.
#[derive(Debug)]
pub struct Subscription {
    /// The most recent events at the time of subscribing, oldest first.
    pub recent: Vec<pb::ActivationEvent>,
    /// Every later event.
    pub live: LiveEvents,
}

/// The events published after a [`Subscription`] was taken.
pub struct LiveEvents {
    node_id: u64,
    rx: broadcast::Receiver<Arc<Numbered>>,
}

impl std::fmt::Debug for LiveEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEvents")
            .field("node_id", &self.node_id)
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl LiveEvents {
    /// The next event; `Lagged(n)` when this reader fell behind and lost `n` of them (see
    /// [`broadcast::Receiver::recv`]).
    pub async fn recv(&mut self) -> Result<pb::ActivationEvent, broadcast::error::RecvError> {
        let e = self.rx.recv().await?;
        Ok(e.to_proto(self.node_id))
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Result<pb::ActivationEvent, broadcast::error::TryRecvError> {
        let e = self.rx.try_recv()?;
        Ok(e.to_proto(self.node_id))
    }
}

impl EventHub {
    /// An empty hub for node `node_id`.
    pub fn new(node_id: u64) -> EventHub {
        let (live, _) = broadcast::channel(FOLLOW_BUFFER);
        EventHub {
            inner: Arc::new(Inner {
                node_id,
                ring: Mutex::new(Ring {
                    next_sequence: 1,
                    events: VecDeque::with_capacity(RING_CAPACITY),
                }),
                live,
            }),
        }
    }

    /// Record one event: number it, keep it, broadcast it.
    pub fn publish(&self, event: &ActivationEvent) {
        let time_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let event = event.clone();
        let mut ring = self
            .inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let sequence = ring.next_sequence;
        ring.next_sequence += 1;
        let e = Arc::new(Numbered {
            sequence,
            time_unix_ms,
            event,
        });
        let evicted = if ring.events.len() == RING_CAPACITY {
            ring.events.pop_front()
        } else {
            None
        };
        ring.events.push_back(e.clone());
        // Sent under the lock, so a subscriber sees every event exactly once: either in its
        // `recent` or on `live`. No receiver is not an error.
        if self.inner.live.receiver_count() > 0 {
            let _ = self.inner.live.send(e);
        }
        drop(ring);
        drop(evicted); // freed outside the lock
    }

    /// The last `recent` events and a receiver of every later one.
    pub fn subscribe(&self, recent: usize) -> Subscription {
        let (kept, rx) = {
            let ring = self
                .inner
                .ring
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let rx = self.inner.live.subscribe();
            let skip = ring.events.len().saturating_sub(recent);
            let kept: Vec<Arc<Numbered>> = ring.events.iter().skip(skip).cloned().collect();
            (kept, rx)
        };
        let node_id = self.inner.node_id;
        Subscription {
            recent: kept.iter().map(|e| e.to_proto(node_id)).collect(),
            live: LiveEvents { node_id, rx },
        }
    }

    /// The node these events belong to.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }
}

impl HostObserver for EventHub {
    fn activation(&self, event: &ActivationEvent) {
        self.publish(event);
    }
}

/// The proto form of an event.
fn to_proto(
    e: &ActivationEvent,
    node_id: u64,
    sequence: u64,
    time_unix_ms: i64,
) -> pb::ActivationEvent {
    pb::ActivationEvent {
        sequence,
        node_id,
        time_unix_ms,
        event_id: e.event_id,
        hresult: e.hresult,
        result: crate::metrics::result_label(e.hresult).to_string(),
        protocol: u32::from(e.protocol),
        syntax: e.syntax.to_string(),
        required_client_count: e.required_client_count,
        current_count: e.current_count,
        workstation: e.workstation.clone(),
        client_machine_id: e.client_machine_id.to_string(),
        client_time: e.client_time,
        is_vm: e.is_vm,
        license_status: e.license_status,
        binding_expiration: e.binding_expiration,
        sku_id: e.sku_id.to_string(),
        kms_counted_id: e.kms_counted_id.to_string(),
        application_id: e.application_id.to_string(),
        pool: e.pool.unwrap_or_default().to_string(),
        source: e.source.to_string(),
        reason: e.reason.clone().unwrap_or_default(),
        degraded: e.degraded,
        duration_us: u64::try_from(e.duration.as_micros()).unwrap_or(u64::MAX),
    }
}

/// Another observer plus an [`EventHub`]: every callback goes to `inner`, activations also to
/// the hub. `kms_host::serve(…, Arc::new(WithEvents::new(metrics, hub)), …)`.
#[derive(Debug)]
pub struct WithEvents<O> {
    inner: Arc<O>,
    events: EventHub,
}

impl<O: HostObserver> WithEvents<O> {
    /// Compose `inner` with `events`.
    pub fn new(inner: Arc<O>, events: EventHub) -> Self {
        WithEvents { inner, events }
    }
}

impl<O: HostObserver> HostObserver for WithEvents<O> {
    fn connection_opened(&self) {
        self.inner.connection_opened();
    }
    fn connection_closed(&self) {
        self.inner.connection_closed();
    }
    fn connection_rejected(&self, reason: &'static str) {
        self.inner.connection_rejected(reason);
    }
    fn protocol_error(&self, reason: &'static str) {
        self.inner.protocol_error(reason);
    }
    fn activation(&self, event: &ActivationEvent) {
        self.inner.activation(event);
        self.events.publish(event);
    }
}

/// Test support: a processed activation (a granted Windows v6 request) from workstation `ws`
/// answered with `hresult`.
#[cfg(test)]
pub(crate) fn sample_event(ws: &str, hresult: u32) -> ActivationEvent {
    ActivationEvent {
        event_id: 12290,
        hresult,
        protocol: 6,
        syntax: "ndr64",
        required_client_count: 25,
        current_count: 3,
        workstation: ws.into(),
        client_machine_id: kms_wire::Guid([1; 16]),
        client_time: 1,
        is_vm: false,
        license_status: 2,
        binding_expiration: 43200,
        sku_id: kms_wire::Guid([2; 16]),
        kms_counted_id: kms_wire::Guid([3; 16]),
        application_id: kms_wire::Guid([4; 16]),
        pool: Some("windows"),
        source: ([127, 0, 0, 1], 5).into(),
        reason: None,
        degraded: false,
        duration: std::time::Duration::from_micros(250),
    }
}

#[cfg(test)]
mod tests {
    use super::sample_event as event;
    use super::*;

    #[test]
    fn ring_keeps_the_last_events_and_live_gets_the_rest() {
        let hub = EventHub::new(3);
        for n in 0..(RING_CAPACITY + 5) {
            hub.publish(&event(&format!("PC{n}"), 0));
        }
        let mut sub = hub.subscribe(2);
        assert_eq!(sub.recent.len(), 2);
        assert_eq!(sub.recent[1].sequence, (RING_CAPACITY + 5) as u64);
        assert_eq!(
            sub.recent[0].workstation,
            format!("PC{}", RING_CAPACITY + 3)
        );
        assert_eq!(hub.subscribe(5000).recent.len(), RING_CAPACITY);
        hub.publish(&event("NEW", 0xC004_F042));
        let e = sub.live.try_recv().unwrap();
        assert_eq!(e.workstation, "NEW");
        assert_eq!(e.result, "product_refused");
        assert_eq!(e.node_id, 3);
        assert_eq!(e.pool, "windows");
        assert_eq!(e.duration_us, 250);
        assert!(sub.live.try_recv().is_err());
    }

    #[test]
    fn with_events_forwards_to_both() {
        #[derive(Default)]
        struct Count(std::sync::atomic::AtomicU32);
        impl HostObserver for Count {
            fn activation(&self, _: &ActivationEvent) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let hub = EventHub::new(1);
        let count = Arc::new(Count::default());
        let both = WithEvents::new(count.clone(), hub.clone());
        both.activation(&event("A", 0));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(hub.subscribe(10).recent.len(), 1);
    }
}
