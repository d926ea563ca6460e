//! `GET /metrics`: Prometheus text, so Grafana can point at any node.
//!
//! Swarm-wide figures (jobs and tasks by state, renders started and wasted)
//! come from this node's copy of the ledger, so every node reports the same
//! ones; node-local figures (bytes, gossip, sync, this node's render times)
//! are labelled with this node's name. The dashboard in
//! `contrib/grafana/renderswarm.json` reads these names.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;
use crate::node::Node;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&s.node),
    )
}

/// One metric family: help, type, and samples (labels, value).
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.out, "{name}{labels} {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.head(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    swarm_figures(node, &mut f);
    local_figures(node, &mut f);
    out
}

fn swarm_figures(node: &Node, f: &mut Family<'_>) {
    let nodes = node.nodes();
    f.one(
        "renderswarm_nodes_alive",
        "gauge",
        "Nodes alive as this node sees them, itself included.",
        nodes.iter().filter(|n| n.alive).count() as f64,
    );
    f.one(
        "renderswarm_nodes_known",
        "gauge",
        "Nodes this node has heard from.",
        nodes.len() as f64,
    );
    let jobs = node.jobs(false);
    let mut by_status: BTreeMap<&str, u64> = [
        "pending",
        "running",
        "paused",
        "done",
        "failed",
        "cancelled",
    ]
    .iter()
    .map(|s| (*s, 0))
    .collect();
    let mut tasks = [0u64; 4];
    let (mut started, mut wasted) = (0u64, 0u64);
    for j in &jobs {
        *by_status.entry(j.status.as_str()).or_default() += 1;
        tasks[0] += u64::from(j.tasks_pending);
        tasks[1] += u64::from(j.tasks_running);
        tasks[2] += u64::from(j.tasks_done);
        tasks[3] += u64::from(j.tasks_failed);
        started += u64::from(j.renders_started);
        wasted += u64::from(j.renders_wasted);
    }
    f.head("renderswarm_jobs", "gauge", "Jobs in the ledger by status.");
    for (status, n) in &by_status {
        f.sample("renderswarm_jobs", &[("status", status)], *n as f64);
    }
    f.head("renderswarm_tasks", "gauge", "Tasks of all jobs by state.");
    for (state, n) in ["pending", "running", "done", "failed"].iter().zip(tasks) {
        f.sample("renderswarm_tasks", &[("state", state)], n as f64);
    }
    f.one(
        "renderswarm_renders_started_total",
        "counter",
        "Renders started across the swarm (from the ledger).",
        started as f64,
    );
    f.one(
        "renderswarm_renders_wasted_total",
        "counter",
        "Renders whose time was thrown away: duplicates, lost races, killed nodes.",
        wasted as f64,
    );
}

fn local_figures(node: &Node, f: &mut Family<'_>) {
    let name = node.config().name.clone();
    let l = [("node", name.as_str())];
    let m = node.metrics();
    let counter = |f: &mut Family<'_>, metric: &str, help: &str, v: u64| {
        f.head(metric, "counter", help);
        f.sample(metric, &l, v as f64);
    };
    counter(
        f,
        "renderswarm_local_renders_started_total",
        "Renders this node started.",
        m.renders_started.load(Ordering::Relaxed),
    );
    counter(
        f,
        "renderswarm_local_renders_stopped_total",
        "Renders this node stopped because its claim lost, the task was done elsewhere, or the job was cancelled.",
        m.renders_lost.load(Ordering::Relaxed),
    );
    let cache = node.cache_info();
    f.head(
        "renderswarm_cache_bytes",
        "gauge",
        "Bytes of chunks the blob store kept at its last trim.",
    );
    f.sample("renderswarm_cache_bytes", &l, cache.bytes as f64);
    f.head(
        "renderswarm_cache_size_bytes",
        "gauge",
        "The store's size (--cache-size).",
    );
    f.sample("renderswarm_cache_size_bytes", &l, cache.size as f64);
    counter(
        f,
        "renderswarm_cache_bytes_freed_total",
        "Bytes of chunks evicted to keep the store within --cache-size.",
        cache.bytes_freed,
    );
    counter(
        f,
        "renderswarm_sync_rounds_total",
        "Digest exchanges this node started.",
        m.syncs.load(Ordering::Relaxed),
    );
    counter(
        f,
        "renderswarm_chunk_bytes_served_total",
        "Chunk bytes sent to peers.",
        m.chunk_bytes_served.load(Ordering::Relaxed),
    );
    counter(
        f,
        "renderswarm_chunk_bytes_fetched_total",
        "Chunk bytes received from peers.",
        m.chunk_bytes_fetched.load(Ordering::Relaxed),
    );
    counter(
        f,
        "renderswarm_chunks_told_total",
        "Chunks other fetchers of the same blob told this node they have got.",
        m.chunks_told.load(Ordering::Relaxed),
    );
    f.head(
        "renderswarm_gossip_deltas_total",
        "counter",
        "Gossiped job deltas received, by whether they changed the ledger (a duplicate or replay changes nothing).",
    );
    for (effect, n) in [
        ("changed", &m.deltas_changed),
        ("unchanged", &m.deltas_unchanged),
    ] {
        f.sample(
            "renderswarm_gossip_deltas_total",
            &[("node", name.as_str()), ("effect", effect)],
            n.load(Ordering::Relaxed) as f64,
        );
    }
    counter(
        f,
        "renderswarm_bad_input_total",
        "Messages and records from peers dropped as invalid.",
        node.bad_input_count(),
    );
    if let Some(s) = node.net_stats() {
        counter(
            f,
            "renderswarm_bytes_sent_total",
            "Bytes written to peer connections (encrypted, framing included).",
            s.bytes_out,
        );
        counter(
            f,
            "renderswarm_bytes_received_total",
            "Bytes read from peer connections.",
            s.bytes_in,
        );
        f.head(
            "renderswarm_gossip_messages_total",
            "counter",
            "Gossip messages by direction.",
        );
        f.sample(
            "renderswarm_gossip_messages_total",
            &[("node", &name), ("direction", "in")],
            s.gossip_in as f64,
        );
        f.sample(
            "renderswarm_gossip_messages_total",
            &[("node", &name), ("direction", "out")],
            s.gossip_out as f64,
        );
        counter(
            f,
            "renderswarm_gossip_dropped_total",
            "Gossip messages dropped because the node was busy.",
            s.gossip_dropped,
        );
        counter(
            f,
            "renderswarm_requests_total",
            "Requests sent to peers (sync and chunks).",
            s.requests_out,
        );
        counter(
            f,
            "renderswarm_request_failures_total",
            "Requests to peers that failed.",
            s.request_failures,
        );
        f.head("renderswarm_connections", "gauge", "Open peer connections.");
        f.sample("renderswarm_connections", &l, s.connections as f64);
    }
    let (buckets, count, sum) = m.render_seconds.read();
    let hist = "renderswarm_render_seconds";
    f.head(hist, "histogram", "How long this node's renders took.");
    for (le, n) in buckets {
        f.sample(
            &format!("{hist}_bucket"),
            &[("node", &name), ("le", &le.to_string())],
            n as f64,
        );
    }
    f.sample(
        &format!("{hist}_bucket"),
        &[("node", &name), ("le", "+Inf")],
        count as f64,
    );
    f.sample(&format!("{hist}_sum"), &l, sum);
    f.sample(&format!("{hist}_count"), &l, count as f64);
}
