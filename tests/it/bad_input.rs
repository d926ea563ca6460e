//! Bad input from the CLI and the API: a clear error naming the bad value,
//! exit code 2 (CLI) or a 4xx with a JSON error (API), and nothing written
//! to the ledger.
//!
//! What belongs here: one test per kind of bad input a user can give.

use std::process::Output;

use crate::harness::*;

/// Run the CLI, expect exit 2 and a message containing `needle`, and check
/// the ledger gained no job.
fn refused(node: &NodeProc, args: &[&str], needle: &str) {
    let before = node.jobs().len();
    let out: Output = node.cli(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "`swarm {}` should exit 2; stderr: {err}",
        args.join(" ")
    );
    assert!(
        err.contains(needle),
        "`swarm {}`: `{needle}` missing from: {err}",
        args.join(" ")
    );
    assert_eq!(
        node.jobs().len(),
        before,
        "a refused request wrote to the ledger"
    );
}

fn orbit() -> String {
    example("orbit.toml").display().to_string()
}

#[test]
fn scene_that_does_not_exist() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", "/no/such/scene.toml", "--frames", "1-3"],
        "`/no/such/scene.toml` does not exist",
    );
}

#[test]
fn scene_that_cannot_be_read() {
    let node = NodeProc::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    // Root reads any file whatever its mode, so as root use a file the
    // kernel refuses to read: another process's memory at address 0.
    let path = if unsafe { libc::geteuid() } == 0 {
        std::path::PathBuf::from("/proc/1/mem")
    } else {
        let p = tmp.path().join("locked.toml");
        std::fs::copy(example("orbit.toml"), &p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        p
    };
    let p = path.display().to_string();
    refused(
        &node,
        &["submit", &p, "--frames", "1-3", "--engine", "builtin"],
        "cannot read scene",
    );
}

#[test]
fn frame_range_backwards() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", &orbit(), "--frames", "10-1"],
        "write it as 1-10",
    );
}

#[test]
fn frame_range_garbage_and_zero_step() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", &orbit(), "--frames", "one-ten"],
        "`one-ten` is not a frame range",
    );
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1-10:0"],
        "step must be at least 1",
    );
}

#[test]
fn too_many_frames() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1-1000001"],
        "at most 1000000",
    );
}

#[test]
fn unknown_engine() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1-3", "--engine", "povray"],
        "unknown engine `povray`",
    );
}

#[test]
fn invalid_builtin_scene() {
    let node = NodeProc::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[output]\nwidth = -3\n").unwrap();
    refused(
        &node,
        &["submit", bad.to_str().unwrap(), "--frames", "1"],
        "not a valid builtin scene",
    );
}

#[test]
fn job_that_does_not_exist() {
    let node = NodeProc::start(&[]);
    for cmd in ["job", "pause", "resume", "cancel", "retry", "archive"] {
        refused(&node, &[cmd, "deadbeef"], "no job matches `deadbeef`");
    }
}

#[test]
fn ambiguous_job_prefix() {
    let node = NodeProc::start(&[]);
    // Seventeen jobs: two must share their first hex digit.
    let mut ids = Vec::new();
    for i in 0..17 {
        let name = format!("j{i}");
        ids.push(
            node.submit(&[&orbit(), "--frames", "1", "--name", &name])
                .id,
        );
        node.cli(&["pause", ids.last().unwrap()]);
    }
    let prefix = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() >= 2)
        .unwrap();
    refused(&node, &["job", &prefix], "give more of the id");
}

#[test]
fn api_errors_are_json_with_the_field() {
    let node = NodeProc::start(&[]);
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/api/v1/jobs", node.api);
    let body = serde_json::json!({ "scene": "/no/such.toml", "frames": "1-3" });
    let resp = client
        .post(&url)
        .header("x-renderswarm", "1")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["field"], "scene");
    assert!(v["error"].as_str().unwrap().contains("does not exist"));

    let body = serde_json::json!({ "scene": orbit(), "frames": "9-2" });
    let resp = client
        .post(&url)
        .header("x-renderswarm", "1")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.json::<serde_json::Value>().unwrap()["field"], "frames");

    let resp = client
        .post(&url)
        .header("x-renderswarm", "1")
        .body("not json")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    let resp = client
        .get(format!("{}/api/v1/jobs/abc", node.api))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(
        resp.json::<serde_json::Value>().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("no job matches")
    );
    assert!(node.jobs().is_empty());
}

#[test]
fn a_device_that_does_not_exist_or_does_not_fit_the_engine() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1", "--device", "vulkan"],
        "unknown device `vulkan`",
    );
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1", "--device", "cuda"],
        "Cycles only; this job's engine is `builtin`",
    );
}

/// A GPU backend becomes a requirement, so only nodes whose GPUs have it
/// (tagged at startup from the GPUs they found) take the job.
#[test]
fn a_gpu_device_is_required_of_the_nodes_that_take_the_job() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let node = NodeProc::start(&["--tags", "studio"]);
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("cube.blend");
    make_blend(&blender, &scene);
    let job = node.submit(&[
        scene.to_str().unwrap(),
        "--frames",
        "1",
        "--device",
        "OptiX",
    ]);
    let view = node.job(&job.id);
    assert_eq!(view.requirements, ["optix"]);
    assert_eq!(
        view.options["device"], "optix",
        "the name is stored in one spelling"
    );
    let info = node.info();
    let tags = info["tags"].to_string();
    if !tags.contains("optix") {
        // This machine has no NVIDIA GPU, so nothing here may take it.
        node.cli(&["cancel", &job.id]);
    }
}

#[test]
fn a_movie_format_or_frame_rate_that_cannot_be() {
    let node = NodeProc::start(&[]);
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1-3", "--encode", "gif"],
        "unknown movie format `gif`: use mp4 or prores",
    );
    refused(
        &node,
        &[
            "submit",
            &orbit(),
            "--frames",
            "1-3",
            "--encode",
            "mp4",
            "--fps",
            "0",
        ],
        "frame rate must be between 1 and 240, not 0",
    );
    refused(
        &node,
        &["submit", &orbit(), "--frames", "1", "--engine", "ffmpeg"],
        "submit the scene with --encode",
    );
}
