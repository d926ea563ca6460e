//! The status page: its files are compiled into the binary (studios are
//! often offline: no CDN, no external font or script) and served at `/`
//! and `/assets/<file>`. Only the listed files exist; any other path is a
//! 404, never a directory listing or a read from disk.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// Every file of the page: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
    ("app.js", JS, include_str!("assets/app.js")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("charts.js", JS, include_str!("assets/charts.js")),
    (
        "detail-worker.js",
        JS,
        include_str!("assets/detail-worker.js"),
    ),
    ("detail.js", JS, include_str!("assets/detail.js")),
    ("dialogs.js", JS, include_str!("assets/dialogs.js")),
    ("events.js", JS, include_str!("assets/events.js")),
    ("failures.js", JS, include_str!("assets/failures.js")),
    ("grid.js", JS, include_str!("assets/grid.js")),
    ("jobs.js", JS, include_str!("assets/jobs.js")),
    ("lightbox.js", JS, include_str!("assets/lightbox.js")),
    ("nodes.js", JS, include_str!("assets/nodes.js")),
    ("stream.js", JS, include_str!("assets/stream.js")),
    ("submit.js", JS, include_str!("assets/submit.js")),
    ("summary.js", JS, include_str!("assets/summary.js")),
    ("thumbs.js", JS, include_str!("assets/thumbs.js")),
    ("util.js", JS, include_str!("assets/util.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/favicon.ico", get(|| async { asset("favicon.svg") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let index = ASSETS[0].2;
        let mut referenced: Vec<String> = Vec::new();
        for (_, _, body) in ASSETS {
            for part in body.split(['"', '\'']) {
                let name = part.trim_start_matches("/assets/").trim_start_matches("./");
                if (part.starts_with("/assets/") || part.starts_with("./"))
                    && (name.ends_with(".js") || name.ends_with(".css") || name.ends_with(".svg"))
                {
                    referenced.push(name.to_string());
                }
            }
        }
        assert!(index.contains("/assets/app.js"));
        for r in referenced {
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == r),
                "the page loads `{r}`, which is not embedded"
            );
        }
    }
}
