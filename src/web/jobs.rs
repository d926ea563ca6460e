//! `/api/v1/` routes for jobs, nodes and events.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::hash::Hash;
use crate::ledger::JobId;
use crate::node::views::{JobView, NodeView};
use crate::node::{Action, Event, NodeInfo, SubmitRequest};
use crate::store::{Manifest, Store};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/node", get(node_info))
        .route("/node/sleep", post(sleep))
        .route("/node/wake", post(wake))
        .route("/nodes", get(nodes))
        .route("/events", get(events))
        .route("/alerts", get(alerts))
        .route("/jobs", get(list_jobs).post(submit))
        .route("/jobs/{job}", get(show_job))
        .route("/jobs/{job}/grid", get(grid))
        .route("/jobs/{job}/priority", post(set_priority))
        .route("/jobs/{job}/frames/{frame}", get(frame))
        .route("/jobs/{job}/tasks/{task}/log", get(task_log))
        .route("/jobs/{job}/{action}", post(act))
}

async fn node_info(State(s): State<AppState>) -> Json<NodeInfo> {
    Json(s.node.info())
}

#[derive(Deserialize)]
struct SleepQuery {
    /// Stop the renders under way too (they go back to the swarm).
    #[serde(default)]
    now: bool,
}

async fn sleep(
    State(s): State<AppState>,
    Query(q): Query<SleepQuery>,
) -> Result<Json<NodeView>, ApiError> {
    s.node.sleep(q.now).map(Json).map_err(ApiError::from)
}

async fn wake(State(s): State<AppState>) -> Result<Json<NodeView>, ApiError> {
    s.node.wake().map(Json).map_err(ApiError::from)
}

#[derive(Deserialize)]
struct NodesQuery {
    #[serde(default)]
    history: bool,
}

async fn nodes(State(s): State<AppState>, Query(q): Query<NodesQuery>) -> Json<Vec<NodeView>> {
    Json(s.node.nodes_with(q.history))
}

async fn grid(
    State(s): State<AppState>,
    Path(job): Path<String>,
) -> Result<Json<crate::node::views::GridView>, ApiError> {
    let id = s.node.resolve(&job)?;
    blocking(&s, move |node| node.grid(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {job}")))
}

async fn alerts(State(s): State<AppState>) -> Json<Vec<crate::node::views::AlertView>> {
    Json(s.node.alerts())
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

async fn events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> Json<Vec<Event>> {
    Json(
        s.node
            .events()
            .since(q.since, q.limit.unwrap_or(500).min(2000)),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    tasks: Option<bool>,
    /// `?archived=true`: archived jobs too.
    archived: Option<bool>,
}

async fn list_jobs(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let tasks = q.tasks.unwrap_or(true);
    let jobs = if q.archived.unwrap_or(false) {
        blocking(&s, move |node| node.all_jobs(tasks)).await?
    } else {
        s.node.jobs(tasks)
    };
    Ok(Json(jobs))
}

/// Runs `f` on tokio's blocking threads: what reads an archived job's
/// tasks reads the ledger file.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&crate::node::Node) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let node = s.node.clone();
    tokio::task::spawn_blocking(move || f(&node))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn submit(
    State(s): State<AppState>,
    body: Result<Json<SubmitRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let Json(req) = body
        .map_err(|e| ApiError::json("body", "the submission is not valid JSON for this API", &e))?;
    created(&s, s.node.submit(req).await?)
}

pub(crate) fn created(s: &AppState, id: JobId) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let view = s
        .node
        .job(id, true)
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the new job vanished"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn show_job(
    State(s): State<AppState>,
    Path(job): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobView>, ApiError> {
    let id = s.node.resolve(&job)?;
    view(&s, id, q.tasks.unwrap_or(true)).await
}

async fn view(s: &AppState, id: JobId, tasks: bool) -> Result<Json<JobView>, ApiError> {
    blocking(s, move |node| node.job(id, tasks))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {}", id.short())))
}

async fn act(
    State(s): State<AppState>,
    Path((job, action)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobView>, ApiError> {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        "retry" => Action::Retry,
        "archive" => Action::Archive,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown action `{other}`: use pause, resume, cancel, retry, archive or priority"
            )));
        }
    };
    let id = s.node.resolve(&job)?;
    s.node.act(id, action).await?;
    view(&s, id, q.tasks.unwrap_or(true)).await
}

#[derive(Deserialize)]
struct PriorityBody {
    priority: i32,
}

async fn set_priority(
    State(s): State<AppState>,
    Path(job): Path<String>,
    Query(q): Query<ListQuery>,
    body: Result<Json<PriorityBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<JobView>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::json("priority", "send {\"priority\": N}", &e))?;
    let id = s.node.resolve(&job)?;
    s.node.act(id, Action::Priority(body.priority)).await?;
    view(&s, id, q.tasks.unwrap_or(true)).await
}

#[derive(Deserialize)]
struct FrameQuery {
    /// `?thumb=1` (or `true`) for a small PNG.
    thumb: Option<String>,
}

/// One finished frame's file, streamed chunk by chunk from the store.
async fn frame(
    State(s): State<AppState>,
    Path((job, frame)): Path<(String, String)>,
    Query(q): Query<FrameQuery>,
) -> Result<Response, ApiError> {
    let id = s.node.resolve(&job)?;
    let frame: u32 = frame
        .parse()
        .map_err(|_| ApiError::bad("frame", format!("`{frame}` is not a frame number")))?;
    let output = blocking(&s, move |node| node.output(id, frame)).await?;
    let output = output.ok_or_else(|| {
        ApiError::not_found(format!(
            "frame {frame} of job {} is not rendered (yet)",
            id.short()
        ))
    })?;
    s.node
        .ensure_blob(output.blob)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    if q.thumb.as_deref().is_some_and(|t| t == "1" || t == "true") {
        return thumb(&s, output.blob, &output.ext).await;
    }
    let name = crate::node::frame_file_name(frame, &output.ext);
    let body = stream_blob(s.node.store().clone(), output.blob)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&output.ext).to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

async fn thumb(s: &AppState, blob: Hash, ext: &str) -> Result<Response, ApiError> {
    if ext != "png" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("no thumbnails of .{ext} frames"),
        ));
    }
    let store = s.node.store().clone();
    let png = tokio::task::spawn_blocking(move || {
        let bytes = store
            .read_blob(blob, 512 << 20)
            .map_err(|e| e.to_string())?;
        super::thumb::thumbnail(blob, &bytes)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        png,
    )
        .into_response())
}

/// The whole log of a task's last failed attempt.
async fn task_log(
    State(s): State<AppState>,
    Path((job, task)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    let id = s.node.resolve(&job)?;
    let blob = blocking(&s, move |node| node.failure_log(id, task))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "task {task} of job {} has no failure log",
                id.short()
            ))
        })?;
    s.node
        .ensure_blob(blob)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let body = stream_blob(s.node.store().clone(), blob)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// A body that reads a file blob chunk by chunk (each verified), so a large
/// EXR never sits whole in memory.
async fn stream_blob(store: Arc<Store>, blob: Hash) -> Result<Body, String> {
    let st = store.clone();
    let manifest = tokio::task::spawn_blocking(move || st.manifest(blob))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Manifest::File { chunks, .. } = manifest else {
        return Err(format!("blob {} is a bundle, not a file", blob.short(12)));
    };
    let stream = futures::stream::iter(chunks).then(move |c| {
        let store = store.clone();
        async move {
            tokio::task::spawn_blocking(move || store.read_chunk(c.hash))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)
        }
    });
    Ok(Body::from_stream(stream))
}

use futures::StreamExt;

fn content_type(ext: &str) -> &'static str {
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "exr" => "image/x-exr",
        "tif" | "tiff" => "image/tiff",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "txt" | "log" => "text/plain; charset=utf-8",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        _ => "application/octet-stream",
    }
}
