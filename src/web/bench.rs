//! `POST /api/v1/bench/raw`: the transfer baseline for `swarm bench`, on
//! nodes started with `--test-bench-protocol` only (others answer 404).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/bench/raw", post(raw))
}

/// Pull `bytes` from `peer`.
#[derive(Deserialize, Serialize)]
pub struct RawRequest {
    pub peer: String,
    pub bytes: u64,
}

/// How long it took.
#[derive(Deserialize, Serialize)]
pub struct RawReply {
    pub bytes: u64,
    pub elapsed_ms: f64,
}

async fn raw(
    State(s): State<AppState>,
    body: Result<Json<RawRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RawReply>, ApiError> {
    let Json(req) =
        body.map_err(|e| ApiError::json("bench", "send {\"peer\": ID, \"bytes\": N}", &e))?;
    if !s.node.bench_enabled() {
        return Err(ApiError::not_found(
            "this node was not started with --test-bench-protocol",
        ));
    }
    let took = s
        .node
        .bench_raw(&req.peer, req.bytes)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(RawReply {
        bytes: req.bytes,
        elapsed_ms: took.as_secs_f64() * 1000.0,
    }))
}
