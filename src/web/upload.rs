//! `POST /api/v1/jobs/upload`: submit a scene or a whole project folder by
//! uploading it.
//!
//! The multipart body is streamed to disk part by part (a multi-GB scene
//! never sits in memory), into a private folder under the node's data
//! directory; every part's file name is checked to be a safe relative path
//! first. The folder is then submitted like a path on this node, and
//! removed once the store holds the scene.
//!
//! Parts: `request` — the submission as JSON ([`SubmitRequest`] without
//! `scene`), then one part per file named `file`, whose file name is the
//! file's path inside the project (a browser's `webkitRelativePath`).

use std::path::{Path, PathBuf};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::post;
use tokio::io::AsyncWriteExt;

use super::{ApiError, AppState};
use crate::ledger::validate::is_safe_relative;
use crate::node::SubmitRequest;
use crate::node::views::JobView;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(
        "/jobs/upload",
        post(upload).layer(DefaultBodyLimit::disable()),
    )
}

/// Removes the upload folder however the request ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn upload(
    State(s): State<AppState>,
    mut parts: Multipart,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let dir = s.node.config().data_dir.join("uploads").join(nonce());
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot create an upload folder: {e}"),
        )
    })?;
    let scratch = Scratch(dir.clone());
    let mut req: Option<SubmitRequest> = None;
    let mut files: Vec<String> = Vec::new();
    while let Some(mut part) = parts
        .next_field()
        .await
        .map_err(|e| ApiError::bad("file", format!("the upload broke off: {e}")))?
    {
        match part.name().unwrap_or("") {
            "request" => {
                let text = part
                    .text()
                    .await
                    .map_err(|e| ApiError::bad("request", e.to_string()))?;
                let parsed = serde_json::from_str(&text).map_err(|e| {
                    ApiError::bad(
                        "request",
                        format!("the `request` part is not a valid submission: {e}"),
                    )
                })?;
                req = Some(parsed);
            }
            "file" => {
                let name = part.file_name().unwrap_or("").to_string();
                let rel = clean_name(&name)?;
                save_part(&mut part, &dir.join(&rel)).await?;
                files.push(rel);
            }
            other => {
                return Err(ApiError::bad(
                    "body",
                    format!("unexpected part `{other}`: send `request` and `file` parts"),
                ));
            }
        }
    }
    let mut req =
        req.ok_or_else(|| ApiError::bad("request", "the upload has no `request` part"))?;
    let scene = match files.as_slice() {
        [] => {
            return Err(ApiError::bad(
                "scene",
                "the upload holds no files: choose a scene file or a project folder",
            ));
        }
        [one] if req.scene_file.as_deref().is_none_or(|f| f == one) => {
            req.scene_file = None;
            dir.join(one)
        }
        _ => single_top_folder(&dir, &files),
    };
    req.scene = scene.display().to_string();
    req.gather = Some(false);
    let id = s.node.submit(req).await?;
    drop(scratch);
    super::jobs::created(&s, id)
}

/// A project folder uploaded from a browser arrives as `folder/...`: submit
/// that folder, so scene-file names are relative to it.
fn single_top_folder(dir: &Path, files: &[String]) -> PathBuf {
    let tops: std::collections::BTreeSet<&str> =
        files.iter().filter_map(|f| f.split('/').next()).collect();
    match tops.iter().next() {
        Some(top) if tops.len() == 1 && files.iter().all(|f| f.contains('/')) => dir.join(top),
        _ => dir.to_path_buf(),
    }
}

fn clean_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim_start_matches("./");
    if name.len() > 4096 || !is_safe_relative(name) {
        let shown: String = name.chars().take(100).collect();
        return Err(ApiError::bad(
            "file",
            format!("uploaded file name `{shown}` is not a relative path inside the project"),
        ));
    }
    Ok(name.to_string())
}

async fn save_part(
    part: &mut axum::extract::multipart::Field<'_>,
    dest: &Path,
) -> Result<(), ApiError> {
    let io = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot save the upload: {e}"),
        )
    };
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ApiError::bad(
                    "file",
                    format!("the upload names `{}` twice", dest.display()),
                )
            } else {
                io(e)
            }
        })?;
    while let Some(bytes) = part
        .chunk()
        .await
        .map_err(|e| ApiError::bad("file", format!("the upload broke off: {e}")))?
    {
        file.write_all(&bytes).await.map_err(io)?;
    }
    file.flush().await.map_err(io)
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{t:x}-{n}")
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
