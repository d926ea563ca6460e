//! `GET /api/v1/stream`: live updates as server-sent events.
//!
//! One stream per page: `hello` once, then `snapshot` (every job, light,
//! and every node) whenever something changed — at most twice a second, and
//! at least every two seconds so ages and liveness stay fresh — `changed`
//! (the ids of the jobs whose records moved, so the page refetches only the
//! job on screen), and `log` for each event as it happens. A slow page
//! simply gets fewer snapshots; nothing queues up for it, and nothing here
//! can hold up the node.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::node::Node;

/// How often the stream looks for changes.
const STEP: Duration = Duration::from_millis(500);
/// A snapshot at least this often, changed or not.
const REFRESH: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/stream", get(stream))
}

fn event<T: Serialize>(name: &str, data: &T) -> SseEvent {
    SseEvent::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| SseEvent::default().event(name).data("null"))
}

fn snapshot(node: &Node) -> SseEvent {
    event(
        "snapshot",
        &serde_json::json!({ "jobs": node.jobs(false), "nodes": node.nodes() }),
    )
}

async fn stream(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let node = s.node.clone();
    let token_required = s.token.is_some();
    let stop = node.shutdown_token();
    let body = async_stream::stream! {
        yield Ok(event("hello", &serde_json::json!({ "node": node.info(), "token_required": token_required })));
        yield Ok(snapshot(&node));
        let mut changes = node.ledger().subscribe();
        let mut seen = node.ledger().changed_since(u64::MAX).1;
        let mut log = node.events().subscribe();
        let mut tick = tokio::time::interval(STEP);
        let mut last = Instant::now();
        let mut dirty = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = changes.changed() => if r.is_err() { break } else { dirty = true },
                e = log.recv() => match e {
                    Ok(e) => yield Ok(event("log", &e)),
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    if dirty {
                        let (ids, now) = node.ledger().changed_since(seen);
                        seen = now;
                        let ids: Vec<String> = match ids {
                            Some(ids) => ids.iter().map(ToString::to_string).collect(),
                            None => node.jobs(false).into_iter().map(|j| j.id).collect(),
                        };
                        yield Ok(event("changed", &serde_json::json!({ "jobs": ids })));
                    }
                    if dirty || last.elapsed() >= REFRESH {
                        yield Ok(snapshot(&node));
                        last = Instant::now();
                        dirty = false;
                    }
                }
            }
        }
    };
    Sse::new(body).keep_alive(KeepAlive::default())
}
