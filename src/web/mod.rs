//! The node's HTTP face: the JSON API under `/api/v1/` (`jobs.rs`,
//! `upload.rs`), live updates as server-sent events (`stream.rs`),
//! Prometheus metrics (`metrics.rs`) and the status page (`page.rs`).
//!
//! [`serve`] takes its listener and its stop signal as arguments
//! (mini-redis style), so tests bind `127.0.0.1:0` and never collide.
//!
//! Safety rules, enforced here for every route:
//! - with a token configured, every `/api/` request needs
//!   `Authorization: Bearer TOKEN` (compared in constant time);
//! - every POST needs the header `x-renderswarm: 1`. A cross-site page
//!   cannot add a custom header without a CORS preflight, which this server
//!   never grants, so a malicious page an artist visits cannot forge
//!   actions against their local node, token or not;
//! - request bodies are limited (1 MiB of JSON); uploads stream to disk.

pub mod bench;
mod error;
mod jobs;
pub mod metrics;
mod page;
mod stream;
mod thumb;
mod upload;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::node::Node;

/// The header every POST must carry.
pub const ACTION_HEADER: &str = "x-renderswarm";

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub node: Node,
    pub token: Option<String>,
}

/// The router for `node`, requiring `token` on the API when given.
pub fn router(node: Node, token: Option<String>) -> Router {
    let state = AppState { node, token };
    let api = jobs::routes()
        .merge(upload::routes())
        .merge(stream::routes())
        .merge(bench::routes())
        .layer(DefaultBodyLimit::max(1 << 20));
    Router::new()
        .nest("/api/v1", api)
        .merge(page::routes())
        .merge(metrics::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Serve the API on `listener` until `stop` fires.
pub async fn serve(
    node: Node,
    listener: TcpListener,
    token: Option<String>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = router(node, token);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API lives under /api/v1/")
}

/// Token and forged-action checks, before any handler runs.
async fn guard(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    let protected = path.starts_with("/api/") || path == "/metrics";
    if protected && let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this node requires its web token: send `Authorization: Bearer TOKEN` (the CLI reads SWARM_WEB_TOKEN)",
            ));
        }
    }
    if req.method() == Method::POST && req.headers().get(ACTION_HEADER).is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "actions must carry the header `{ACTION_HEADER}: 1` (this refuses requests forged by other web pages)"
            ),
        ));
    }
    Ok(next.run(req).await)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
