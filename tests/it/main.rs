//! The integration tests: one binary, one module per area.

mod addon;
mod adversary;
mod alerts;
mod ansible;
mod bad_input;
mod bench;
mod blender;
mod browser;
mod cache;
mod config_lookup;
mod crash_loop;
mod demo;
mod disk_full;
mod encode;
mod gather;
mod harness;
mod ledger_laws;
mod load;
mod netns;
mod packaging;
mod service;
mod single_node;
mod sleep;
mod swarm;
mod swarm_work;
mod web_api;
