//! The HTTP API, endpoint by endpoint, errors included; `/metrics` through
//! a Prometheus text parser; the token and forged-action rules; the page's
//! files.
//!
//! What belongs here: what a script or the page sees over HTTP.

use std::io::Read;

use reqwest::StatusCode;
use reqwest::blocking::{Client, multipart};
use serde_json::{Value, json};

use renderswarm::ledger::JobStatus;

use crate::harness::*;

fn post(c: &Client, url: &str) -> reqwest::blocking::RequestBuilder {
    c.post(url).header("x-renderswarm", "1")
}

fn status(r: reqwest::blocking::Response) -> (StatusCode, Value) {
    let code = r.status();
    (code, r.json().unwrap_or(Value::Null))
}

#[test]
fn every_endpoint_answers_and_refuses_clearly() {
    // The engine fails at once, until the test makes it hang instead (so
    // the retried job stays open while it is paused, resumed, cancelled).
    let hang = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let hang_path = hang.to_str().unwrap().to_string();
    std::fs::remove_file(&hang_path).unwrap();
    let bad = format!("bad=sh -c 'test -e {hang_path} && sleep 60; echo Error: it broke; exit 4'");
    let node = NodeProc::start(&["--engine-command", &bad]);
    let c = Client::new();
    let api = format!("{}/api/v1", node.api);
    let orbit = example("orbit.toml").display().to_string();

    // Submit by path, then read the job back in every form.
    let (code, job) = status(
        post(&c, &format!("{api}/jobs"))
            .json(&json!({ "scene": orbit, "frames": "1-3" }))
            .send()
            .unwrap(),
    );
    assert_eq!(code, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = node.wait_job(&id, "the job finishes", |j| j.status == JobStatus::Done);
    assert_eq!(done.frames_done, 3);
    let (code, light) = status(c.get(format!("{api}/jobs?tasks=false")).send().unwrap());
    assert_eq!(code, StatusCode::OK);
    assert!(
        light[0].get("tasks").is_none(),
        "a light listing carries no tasks"
    );
    let (_, full) = status(c.get(format!("{api}/jobs/{}", &id[..8])).send().unwrap());
    assert_eq!(full["tasks"].as_array().unwrap().len(), 3);
    let (code, grid) = status(c.get(format!("{api}/jobs/{id}/grid")).send().unwrap());
    assert_eq!(code, StatusCode::OK);
    assert_eq!(grid["states"], "ddd");
    assert_eq!(grid["frames"], json!([1, 3, 1]));

    // Frames: the image, a thumbnail, and the errors.
    let r = c.get(format!("{api}/jobs/{id}/frames/2")).send().unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let full_png = r.bytes().unwrap();
    assert_eq!(&full_png[..8], b"\x89PNG\r\n\x1a\n");
    let thumb = c
        .get(format!("{api}/jobs/{id}/frames/2?thumb=1"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(thumb.len() < full_png.len() && thumb.starts_with(b"\x89PNG"));
    assert_eq!(
        c.get(format!("{api}/jobs/{id}/frames/9"))
            .send()
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(format!("{api}/jobs/{id}/frames/abc"))
            .send()
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );

    // Actions and their refusals.
    let (code, err) = status(post(&c, &format!("{api}/jobs/{id}/pause")).send().unwrap());
    assert_eq!(code, StatusCode::CONFLICT, "pausing a done job: {err}");
    assert!(err["error"].as_str().unwrap().contains("is done"));
    let (code, _) = status(
        post(&c, &format!("{api}/jobs/{id}/explode"))
            .send()
            .unwrap(),
    );
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, j) = status(
        post(&c, &format!("{api}/jobs/{id}/priority?tasks=false"))
            .json(&json!({ "priority": 7 }))
            .send()
            .unwrap(),
    );
    assert_eq!((code, j["priority"].as_i64()), (StatusCode::OK, Some(7)));
    let (code, err) = status(
        post(&c, &format!("{api}/jobs/{id}/priority"))
            .json(&json!({ "priority": "high" }))
            .send()
            .unwrap(),
    );
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "priority");

    // A failing job: pause/resume/cancel/retry, and the whole log of a failure.
    let (_, bad) = status(
        post(&c, &format!("{api}/jobs"))
            .json(&json!({ "scene": orbit, "frames": "1", "engine": "bad", "max_attempts": 1 }))
            .send()
            .unwrap(),
    );
    let bad_id = bad["id"].as_str().unwrap().to_string();
    node.wait_job(&bad_id, "the bad job fails", |j| {
        j.status == JobStatus::Failed
    });
    let first_task_log = |job: &str| {
        let r = c
            .get(format!("{api}/jobs/{job}/tasks/0/log"))
            .send()
            .unwrap();
        (r.status(), r.text().unwrap())
    };
    let (code, log) = first_task_log(&bad_id);
    assert!(
        code == StatusCode::OK && log.contains("it broke"),
        "{code}: {log}"
    );
    assert_eq!(first_task_log(&id).0, StatusCode::NOT_FOUND);
    std::fs::write(&hang_path, "").unwrap();
    let (code, j) = status(
        post(&c, &format!("{api}/jobs/{bad_id}/retry"))
            .send()
            .unwrap(),
    );
    assert_eq!(code, StatusCode::OK);
    assert_ne!(j["status"], "failed", "retry gives the task fresh attempts");
    // An action the job's state refuses: 409, saying why.
    let conflict = |action: &str, says: &str| {
        let (code, err) = status(
            post(&c, &format!("{api}/jobs/{bad_id}/{action}"))
                .send()
                .unwrap(),
        );
        assert_eq!(code, StatusCode::CONFLICT, "{action}: {err}");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains(says), "{action}: {text}");
    };
    conflict("archive", "archive does not apply");
    for action in ["pause", "resume", "cancel"] {
        let (code, j) = status(
            post(&c, &format!("{api}/jobs/{bad_id}/{action}"))
                .send()
                .unwrap(),
        );
        assert_eq!(code, StatusCode::OK, "{action}: {j}");
    }
    assert_eq!(node.job(&bad_id).status, JobStatus::Cancelled);

    // Archiving (refused above while the job was open) leaves the list, not
    // the ledger, and takes no other action after.
    let (code, j) = status(
        post(&c, &format!("{api}/jobs/{bad_id}/archive?tasks=false"))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (code, &j["archived"]),
        (StatusCode::OK, &json!(true)),
        "{j}"
    );
    let listed = |q: &str| -> Vec<String> {
        let (_, jobs) = status(c.get(format!("{api}/jobs?tasks=false{q}")).send().unwrap());
        jobs.as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!listed("").contains(&bad_id), "an archived job is listed");
    assert!(listed("&archived=true").contains(&bad_id));
    // Without its tasks the job is shown from the summary the ledger kept
    // at its archive; with them, from its tasks read back: the same.
    let (_, whole) = status(c.get(format!("{api}/jobs/{bad_id}")).send().unwrap());
    let (_, brief) = status(
        c.get(format!("{api}/jobs/{bad_id}?tasks=false"))
            .send()
            .unwrap(),
    );
    assert!(whole["tasks"].is_array() && brief["tasks"].is_null());
    let counts = [
        "tasks_pending",
        "tasks_running",
        "tasks_done",
        "tasks_failed",
    ];
    let more = ["status", "frames_done", "renders_started", "renders_wasted"];
    for k in counts.into_iter().chain(more) {
        assert_eq!(whole[k], brief[k], "{k}: {whole} against {brief}");
    }
    // Its task's log is still served, the task read back from the file.
    let (code, log) = first_task_log(&bad_id);
    assert!(
        code == StatusCode::OK && log.contains("it broke"),
        "{code}: {log}"
    );
    conflict("retry", "is archived: retry does not apply");
    let out = node.cli(&["jobs"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&bad_id[..12]));
    let out = node.cli(&["jobs", "--archived"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().find(|l| l.starts_with(&bad_id[..12]));
    assert!(
        line.is_some_and(|l| l.contains("archived")),
        "`swarm jobs --archived` says:\n{table}"
    );
    let out = node.cli(&["job", &bad_id]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("status   cancelled (archived)"),
        "`swarm job` says:\n{shown}"
    );

    // Nodes, node, events.
    let (_, nodes) = status(c.get(format!("{api}/nodes?history=true")).send().unwrap());
    assert_eq!(nodes[0]["me"], true);
    assert!(nodes[0]["telemetry"]["memory_total"].as_u64().unwrap() > 0);
    assert!(
        !nodes[0]["history"].as_array().unwrap().is_empty(),
        "history of this node's telemetry"
    );
    let (_, info) = status(c.get(format!("{api}/node")).send().unwrap());
    assert_eq!(info["id"], node.id.as_str());
    let (_, events) = status(c.get(format!("{api}/events?since=0")).send().unwrap());
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in ["job_submitted", "job_finished", "task_failed", "job_failed"] {
        assert!(kinds.contains(&k), "event {k} missing from {kinds:?}");
    }
    assert_eq!(
        c.get(format!("{api}/nope")).send().unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn uploads_stream_a_file_or_a_folder_and_refuse_bad_names() {
    let node = NodeProc::start(&[]);
    let c = Client::new();
    let url = format!("{}/api/v1/jobs/upload", node.api);
    let orbit = std::fs::read(example("orbit.toml")).unwrap();
    let request = |extra: Value| {
        let mut r = json!({ "frames": "1-2" });
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        r.to_string()
    };
    // One file.
    let form = multipart::Form::new()
        .text("request", request(json!({})))
        .part(
            "file",
            multipart::Part::bytes(orbit.clone()).file_name("orbit.toml"),
        );
    let (code, job) = status(post(&c, &url).multipart(form).send().unwrap());
    assert_eq!(code, StatusCode::CREATED, "{job}");
    node.wait_job(
        job["id"].as_str().unwrap(),
        "the uploaded job finishes",
        |j| j.status == JobStatus::Done,
    );
    // A project folder, as a browser sends it (webkitRelativePath).
    let form = multipart::Form::new()
        .text(
            "request",
            request(json!({ "scene_file": "scenes/orbit.toml" })),
        )
        .part(
            "file",
            multipart::Part::bytes(orbit.clone()).file_name("shot/scenes/orbit.toml"),
        )
        .part(
            "file",
            multipart::Part::bytes(b"notes".to_vec()).file_name("shot/notes.txt"),
        );
    let (code, job) = status(post(&c, &url).multipart(form).send().unwrap());
    assert_eq!(code, StatusCode::CREATED, "{job}");
    assert_eq!(job["scene_file"], "scenes/orbit.toml");
    // Names that would escape the upload folder, and an empty upload.
    for bad in ["../evil.toml", "/etc/passwd", "a/../../b.toml"] {
        let form = multipart::Form::new()
            .text("request", request(json!({})))
            .part(
                "file",
                multipart::Part::bytes(orbit.clone()).file_name(bad.to_string()),
            );
        let (code, err) = status(post(&c, &url).multipart(form).send().unwrap());
        assert_eq!(
            (code, err["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("file")),
            "{bad}: {err}"
        );
    }
    let form = multipart::Form::new().text("request", request(json!({})));
    let (code, err) = status(post(&c, &url).multipart(form).send().unwrap());
    assert_eq!(
        (code, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("scene"))
    );
    // A bad frame range is named, and nothing was left in the upload folder.
    let form = multipart::Form::new()
        .text("request", json!({ "frames": "5-1" }).to_string())
        .part(
            "file",
            multipart::Part::bytes(orbit).file_name("orbit.toml"),
        );
    let (code, err) = status(post(&c, &url).multipart(form).send().unwrap());
    assert_eq!(
        (code, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("frames"))
    );
    let left = std::fs::read_dir(node.data.join("uploads"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "upload folders are removed");
}

#[test]
fn the_token_guards_the_api_and_actions_cannot_be_forged() {
    let node = NodeProc::start(&["--web-token", "s3cret"]);
    let c = Client::new();
    let api = format!("{}/api/v1", node.api);
    assert_eq!(
        c.get(format!("{api}/jobs")).send().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.get(format!("{api}/jobs"))
            .bearer_auth("wrong")
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.get(format!("{api}/jobs"))
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(format!("{}/metrics", node.api))
            .send()
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The page itself loads, so it can ask for the token.
    assert_eq!(
        c.get(format!("{}/", node.api)).send().unwrap().status(),
        StatusCode::OK
    );
    // A POST without the action header is refused even with the token.
    let body = json!({ "scene": example("orbit.toml"), "frames": "1" });
    let r = c
        .post(format!("{api}/jobs"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The CLI passes the token.
    let out = std::process::Command::new(swarm_bin())
        .args(["jobs", "--token", "s3cret", "--api", &node.api])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.cli(&["jobs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("web token"));
}

#[test]
fn a_public_address_without_a_token_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(swarm_bin())
        .args(["node", "--no-mdns", "--web", "0.0.0.0:0", "--data"])
        .arg(tmp.path())
        .env_remove("SWARM_WEB_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--web-token"), "{err}");
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let node = NodeProc::start(&[]);
    node.submit(&[
        example("orbit.toml").to_str().unwrap(),
        "--frames",
        "1-2",
        "--wait",
    ]);
    let text = Client::new()
        .get(format!("{}/metrics", node.api))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("renderswarm_nodes_alive", None), Some(1.0));
    assert_eq!(
        value("renderswarm_tasks", Some(("state", "done"))),
        Some(2.0)
    );
    assert_eq!(value("renderswarm_renders_started_total", None), Some(2.0));
    assert_eq!(value("renderswarm_renders_wasted_total", None), Some(0.0));
    for name in [
        "renderswarm_bytes_sent_total",
        "renderswarm_gossip_messages_total",
        "renderswarm_sync_rounds_total",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == name),
            "{name} missing"
        );
    }
    let hist = scrape
        .samples
        .iter()
        .find(|s| s.metric == "renderswarm_render_seconds")
        .expect("the render-time histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(h) => assert_eq!(h.last().map(|b| b.count), Some(2.0)),
        other => panic!("not a histogram: {other:?}"),
    }
}

#[test]
fn the_page_and_its_files_are_served_and_nothing_else() {
    let node = NodeProc::start(&[]);
    let c = Client::new();
    let r = c.get(format!("{}/", node.api)).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().unwrap().contains("/assets/app.js"));
    let r = c.get(format!("{}/assets/app.js", node.api)).send().unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for bad in [
        "/assets/nope.js",
        "/assets/..%2FCargo.toml",
        "/assets/",
        "/src/main.rs",
        "/../Cargo.toml",
    ] {
        let r = c.get(format!("{}{bad}", node.api)).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }
}

#[test]
fn the_stream_says_hello_then_sends_snapshots() {
    let node = NodeProc::start(&[]);
    let mut r = Client::new()
        .get(format!("{}/api/v1/stream", node.api))
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !(seen.contains("event: hello") && seen.contains("event: snapshot")) {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("\"token_required\":false"));
}

/// Request bodies are capped, actions are POST only, and no route reads a
/// path it was handed.
#[test]
fn bodies_methods_and_paths_are_limited() {
    let node = NodeProc::start(&[]);
    let c = Client::new();
    let api = format!("{}/api/v1", node.api);
    let job = node.submit(&[example("orbit.toml").to_str().unwrap(), "--frames", "1"]);
    // A JSON body over 1 MiB is refused before it is parsed.
    let huge = json!({ "scene": "x".repeat((1 << 20) + (64 << 10)), "frames": "1" });
    // (A client of its own: the server closes a connection whose body it
    // refused unread, and a pooled connection would be reused.)
    let r = post(&Client::new(), &format!("{api}/jobs"))
        .json(&huge)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Actions change state: GET is not enough.
    for action in ["pause", "resume", "cancel", "retry", "priority", "archive"] {
        let r = c
            .get(format!("{api}/jobs/{}/{action}", job.id))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{action}");
    }
    // Ids and indexes are parsed, never used as paths.
    for bad in [
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        "/jobs/%2Fetc%2Fpasswd/frames/1",
        "/jobs/../../Cargo.toml",
    ] {
        let r = c.get(format!("{api}{bad}")).send().unwrap();
        assert!(
            r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::BAD_REQUEST,
            "{bad}: {}",
            r.status()
        );
    }
    let r = c
        .get(format!("{api}/jobs/{}/tasks/..%2F0/log", job.id))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(format!("{api}/jobs/{}/frames/..%2F1", job.id))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
