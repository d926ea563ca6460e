//! The integration tests: one binary, one module per area.

mod adversary;
mod alerts;
mod bad_input;
mod bench;
mod blender;
mod browser;
mod crash_loop;
mod demo;
mod gather;
mod harness;
mod ledger_laws;
mod single_node;
mod swarm;
mod swarm_work;
mod web_api;
