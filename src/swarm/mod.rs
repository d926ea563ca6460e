//! The network layer: libp2p behind a small, byte-oriented API.
//!
//! It moves bytes only. It knows nothing of jobs or rendering; the node
//! encodes and decodes its own messages (with their size limits) and tells
//! this layer what it thought of each gossip message.
//!
//! Shaped like rust-libp2p's `examples/file-sharing`: [`start`] returns a
//! cloneable [`Client`] whose calls are commands sent over a channel (with a
//! oneshot reply where there is an answer), a receiver of [`Event`]s, and
//! spawns the one event loop that alone owns the `Swarm`. Unlike that
//! example, nothing here panics on an event or a closed channel, the loop
//! never waits on a slow consumer (a full event channel drops gossip and
//! inbound requests, and counts them), and it listens only where the config
//! says.
//!
//! # Layout
//!
//! - `transport`: TCP -> byte counter -> Noise (the swarm key its prologue) -> Yamux.
//! - `behaviour`: gossipsub (tuned for 2-20 nodes, scored), request-response,
//!   identify, ping, mDNS, allow/block list.
//! - `requests` and `codec`: one request-response behaviour per protocol,
//!   raw length-prefixed bytes with limits checked before reading.
//! - `client`: the [`Client`] the node holds; `types`: config, events, errors;
//!   `stats`: the counters.
//! - `event_loop`, `handlers`, `dialer`: the loop, what it does with each swarm
//!   event, and how it keeps peers connected (re-dial, ping watchdog).

mod behaviour;
mod client;
mod codec;
mod dialer;
mod event_loop;
mod handlers;
mod requests;
mod stats;
mod transport;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bench;
#[cfg(test)]
mod tests_faults;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::client::Client;
#[doc(hidden)]
pub use self::codec::read_frame;
pub use self::stats::{Stats, StatsSnapshot};
pub use self::types::{
    Event, MessageHandle, NetError, ProtocolSpec, RequestFailure, ResponseHandle, SwarmConfig,
    SwarmError, Verdict,
};
pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr, PeerId};

/// How many events may wait for the node before gossip and requests are
/// dropped.
const EVENT_CAPACITY: usize = 1024;

/// Builds the swarm from `cfg`, starts listening, and spawns its event loop
/// on the current tokio runtime. The loop runs until `stop` is cancelled,
/// [`Client::close`] is called, or every `Client` is dropped.
///
/// Must be called from within a tokio runtime.
pub fn start(
    cfg: SwarmConfig,
    stop: CancellationToken,
) -> Result<(Client, mpsc::Receiver<Event>), SwarmError> {
    let stats = Arc::new(Stats::default());
    let local_peer_id = cfg.keypair.public().to_peer_id();
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
    let event_loop = event_loop::EventLoop::new(cfg, stats.clone(), command_rx, event_tx, stop)?;
    let client = Client::new(local_peer_id, command_tx, stats, event_loop.protocols());
    tokio::spawn(event_loop.run());
    Ok((client, event_rx))
}
