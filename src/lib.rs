//! renderswarm: a peer-to-peer, leaderless render farm.
//!
//! Every studio machine runs the same `swarm` binary. Nodes find each other,
//! agree on one job ledger without any manager, hand scene files around by
//! content hash, render frames with the engines each has, and show the whole
//! farm on a local web page. Any node can submit, watch and control any job;
//! any node can die at any moment and nothing is lost.
//!
//! # Layout
//!
//! - [`ledger`] — what is true: the CRDT records of every job, their merge,
//!   what is derived from them, and their persistence (redb).
//! - [`node`] — what a node does about it: owns the ledger, the store and
//!   the engines; the scheduler that claims tasks and the runner loop.
//! - [`store`] — the blake3 content-addressed chunk store: FastCDC import,
//!   verified export, bundles of project folders.
//! - [`render`] — the engines (`builtin`, `blender`, `command`) and the task
//!   runner: spawn, progress, timeout, stall and crash detection, output checks.
//! - [`web`] — the local HTTP API, live events and the status page.
//! - [`alert`] — events people want to hear about, and sending them by
//!   email (lettre) and webhook, batched and rate-limited.
//! - [`telemetry`] — hardware samples for heartbeats and the page.
//! - [`swarm`] — libp2p: transport, discovery, gossip, requests; bytes only.
//! - [`cli`] — the `swarm` commands, talking to a node over its HTTP API.
//! - [`codec`], [`hash`] — the one binary encoding and the one hash type.
//! - [`netlab`] — hosts in network namespaces on one machine, for the
//!   tests and benchmarks that need a real network between nodes.
//!
//! `ledger`, `store` and `render` know nothing of each other or of the
//! network; `node` is the only place where they meet. Learn the system from
//! `ledger` (what is true) and `node` (what a node does about it).

pub mod alert;
pub mod cli;
pub mod codec;
#[cfg(test)]
mod fuzz_seeds;
pub mod hash;
pub mod ledger;
pub mod netlab;
pub mod node;
pub mod render;
pub mod store;
pub mod swarm;
pub mod telemetry;
pub mod web;
