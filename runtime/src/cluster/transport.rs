//! Worker-to-worker transport (TO BE WRITTEN: see the contract below).
//!
//! Contract: a [`Transport`] listens on one TCP port per worker. [`Transport::attach`] keeps
//! clones of the local inboxes to deliver what peers send, and fills every task of the plan
//! that is not hosted here with a sender that forwards to the worker hosting it.

use std::net::SocketAddr;

use tokio::sync::watch;

use crate::executor::Links;
use crate::plan::Plan;

/// Where every worker of the assignment listens, indexed by worker (`None`: not yet known).
pub type Peers = watch::Receiver<Vec<Option<SocketAddr>>>;

pub struct Transport {
    addr: SocketAddr,
}

impl Transport {
    /// Binds `addr` (port 0: any free port) for the worker `me` of `topology`'s assignment
    /// `version`; peers of another topology or version are refused.
    pub async fn bind(
        addr: SocketAddr,
        topology: &str,
        version: u64,
        me: usize,
        peers: Peers,
    ) -> std::io::Result<Transport> {
        let _ = (topology, version, me, peers);
        Ok(Transport { addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Wires this worker into the plan (see the module docs). Spawns on the current runtime.
    pub fn attach(&mut self, plan: &Plan, links: &mut Links) {
        let _ = (plan, links);
    }

    /// Stops delivering what peers send (drops the local senders it holds), so local bolts
    /// end once their local upstream tasks have ended.
    pub fn close_inbound(&self) {}
}
