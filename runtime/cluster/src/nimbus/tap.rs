//! Taps through nimbus: `squall tap` on a cluster's topology.
//!
//! Contract: [`TapRelay::open`] registers a tap (topology, component, stream) and returns the
//! session its reader holds. Every worker heartbeat of that topology is answered with the
//! topology's open taps ([`TapRelay::wants`]); a worker hosting the component samples it (see
//! `squall_engine::tap`) and sends what it took with its next heartbeat, which
//! [`TapRelay::deliver`] hands to the reader, never waiting (a reader that lags loses
//! samples). A worker's refusal (no such stream) is the reader's last line. A tap ends when
//! its reader drops the session, when it was refused, or when its topology is gone
//! ([`TapRelay::retain`]); workers stop sampling at the heartbeat after.

use std::collections::HashMap;
use std::sync::Mutex;

use squall_engine::tap::{TapEvent, TapSession};
use tokio::sync::mpsc;

use super::{TapBatch, TapWant};

struct Relay {
    topology: String,
    want: TapWant,
    tx: mpsc::Sender<TapEvent>,
}

/// The open taps of every topology.
#[derive(Default)]
pub(super) struct TapRelay {
    inner: Mutex<Relays>,
}

#[derive(Default)]
struct Relays {
    next: u64,
    open: HashMap<u64, Relay>,
}

impl TapRelay {
    fn lock(&self) -> std::sync::MutexGuard<'_, Relays> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a tap on `component`'s `stream` (all if `None`) of `topology`.
    pub(super) fn open(&self, topology: &str, component: &str, stream: Option<&str>) -> TapSession {
        let (tx, session) = TapSession::channel();
        let mut relays = self.lock();
        relays.next += 1;
        let id = relays.next;
        let want = TapWant { id, component: component.to_owned(), stream: stream.map(str::to_owned) };
        relays.open.insert(id, Relay { topology: topology.to_owned(), want, tx });
        session
    }

    /// The taps open on `topology` whose readers are still there.
    pub(super) fn wants(&self, topology: &str) -> Vec<TapWant> {
        let mut relays = self.lock();
        relays.open.retain(|_, r| !r.tx.is_closed());
        relays.open.values().filter(|r| r.topology == topology).map(|r| r.want.clone()).collect()
    }

    /// Hands what a worker of `topology` sampled to the readers.
    pub(super) fn deliver(&self, topology: &str, batches: Vec<TapBatch>) {
        if batches.is_empty() {
            return;
        }
        let mut relays = self.lock();
        for batch in batches {
            let Some(relay) = relays.open.get(&batch.id).filter(|r| r.topology == topology) else { continue };
            for tuple in batch.tuples {
                if relay.tx.try_send(Ok(tuple)).is_err() {
                    break;
                }
            }
            if let Some(reason) = batch.refused {
                let _ = relay.tx.try_send(Err(reason));
                relays.open.remove(&batch.id);
            }
        }
    }

    /// Ends the taps of topologies `exists` says are gone.
    pub(super) fn retain(&self, exists: impl Fn(&str) -> bool) {
        self.lock().open.retain(|_, r| exists(&r.topology));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_engine::tap::TapTuple;

    fn tuple(task: u32) -> TapTuple {
        TapTuple {
            component: "split".into(),
            task,
            stream: "default".into(),
            timestamp: 1,
            fields: vec!["word".into()],
            values: smallvec::smallvec![squall_api::Value::from("the")],
        }
    }

    #[tokio::test]
    async fn a_tap_is_asked_of_its_topology_until_its_reader_leaves() {
        let relay = TapRelay::default();
        let mut session = relay.open("wc", "split", Some("default"));
        let wants = relay.wants("wc");
        assert_eq!(wants.len(), 1);
        assert_eq!(wants[0].component, "split");
        assert!(relay.wants("other").is_empty());
        relay.deliver(
            "wc",
            vec![TapBatch { id: wants[0].id, tuples: vec![tuple(3), tuple(4)], refused: None }],
        );
        assert_eq!(session.recv().await.unwrap().unwrap().task, 3);
        assert_eq!(session.recv().await.unwrap().unwrap().task, 4);
        drop(session);
        assert!(relay.wants("wc").is_empty(), "a tap whose reader left is no longer asked for");
    }

    #[tokio::test]
    async fn a_refusal_ends_the_tap_and_a_gone_topology_closes_its_taps() {
        let relay = TapRelay::default();
        let mut refused = relay.open("wc", "split", Some("nope"));
        let id = relay.wants("wc")[0].id;
        relay
            .deliver("wc", vec![TapBatch { id, tuples: Vec::new(), refused: Some("no stream nope".into()) }]);
        assert_eq!(refused.recv().await, Some(Err("no stream nope".into())));
        assert_eq!(refused.recv().await, None);
        let mut gone = relay.open("wc", "split", None);
        relay.retain(|t| t != "wc");
        assert_eq!(gone.recv().await, None);
    }

    #[tokio::test]
    async fn a_batch_for_another_topology_or_an_unknown_tap_is_dropped() {
        let relay = TapRelay::default();
        let mut session = relay.open("wc", "split", None);
        let id = relay.wants("wc")[0].id;
        relay.deliver("other", vec![TapBatch { id, tuples: vec![tuple(1)], refused: None }]);
        relay.deliver("wc", vec![TapBatch { id: id + 7, tuples: vec![tuple(2)], refused: None }]);
        relay.deliver("wc", vec![TapBatch { id, tuples: vec![tuple(5)], refused: None }]);
        assert_eq!(session.recv().await.unwrap().unwrap().task, 5);
    }
}
