//! The Blender add-on (`contrib/blender/renderswarm_addon.py`) driven inside
//! real background Blender against a real node: installed through Blender's
//! own Preferences operators, it submits the saved file with the panel's
//! settings, shows the job's progress, opens the node's page, and reports
//! every refusal in words rather than a traceback.
//!
//! What belongs here: tests of the add-on. They need Blender: under
//! `CI=true` a missing Blender fails them; elsewhere they skip with a note.
//! The Blender side is `tests/support/blender_addon.py`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use renderswarm::ledger::JobStatus;
use renderswarm::node::views::JobView;
use serde_json::{Value, json};

use crate::harness::*;

const TOKEN: &str = "addon-test-token";

/// Run the driver script in background Blender on `scene` (or no file)
/// with `config`, in a throwaway user config so nothing reaches the real
/// one. Returns what the script reported, by key.
fn drive_blender(
    blender: &Path,
    home: &Path,
    scene: Option<&Path>,
    config: Value,
    env: &[(&str, &Path)],
) -> BTreeMap<String, Value> {
    let mut cmd = Command::new(blender);
    cmd.args(["-b", "--factory-startup"]);
    if let Some(scene) = scene {
        cmd.arg(scene);
    }
    cmd.args(["--python-exit-code", "1", "--python"])
        .arg(repo().join("tests/support/blender_addon.py"))
        .arg("--")
        .arg(config.to_string())
        .env("BLENDER_USER_CONFIG", home.join("config"))
        .env("BLENDER_USER_SCRIPTS", home.join("scripts"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run blender");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RENDERSWARM_TEST ok true"),
        "the add-on script failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RENDERSWARM_TEST "))
        .map(|l| {
            let (key, value) = l.split_once(' ').unwrap();
            (key.to_string(), serde_json::from_str(value).unwrap())
        })
        .collect()
}

fn lines(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// `GET /api/v1/jobs/JOB` with the node's token.
fn job_with_token(api: &str, id: &str) -> JobView {
    reqwest::blocking::Client::new()
        .get(format!("{api}/api/v1/jobs/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET job {id}: {e}"))
}

/// The artist's path: install, set the panel, submit, watch it finish, open
/// the page. The node requires a web token, so the header is proven too.
#[test]
fn addon_submits_the_saved_file_and_shows_its_progress() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("cube.blend");
    make_blend(&blender, &scene);
    let node = NodeProc::start(&["--web-token", TOKEN]);
    let collect = tmp.path().join("frames");
    let opened = tmp.path().join("opened.txt");
    let browser = tmp.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", opened.display()),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();

    let seen = drive_blender(
        &blender,
        tmp.path(),
        Some(&scene),
        json!({
            "addon": repo().join("contrib/blender/renderswarm_addon.py"),
            "mode": "submit",
            "api": node.api,
            "token": TOKEN,
            "frames": [2, 3],
            "frames_per_task": 2,
            "priority": 7,
            "collect": collect,
            "deadline_secs": DEADLINE.as_secs(),
        }),
        &[("BROWSER", &browser)],
    );

    let installed = seen["installed"].as_str().unwrap();
    assert!(
        Path::new(installed).starts_with(tmp.path().join("scripts")),
        "installed outside the temporary user scripts: {installed}"
    );
    assert_eq!(
        seen["default_frames"], "1-3",
        "defaults to the scene's range"
    );
    assert_eq!(
        seen["own_range_starts_at"],
        json!([1, 3]),
        "unticking the scene's range starts the own range from it"
    );

    let id = seen["job"].as_str().unwrap();
    let job = job_with_token(&node.api, id);
    assert_eq!(job.engine, "blender");
    assert_eq!(job.scene_file, "cube.blend");
    assert_eq!(job.frames, "2-3");
    assert_eq!(job.frames_per_task, 2);
    assert_eq!(job.priority, 7);
    assert_eq!((job.frames_total, job.tasks_total), (2, 1));
    assert_eq!(job.status, JobStatus::Done, "{job:#?}");
    assert_eq!(job.collect_dir.as_deref(), Some(collect.to_str().unwrap()));

    let first = lines(&seen["first_poll"]);
    assert!(
        first.contains(&format!("Job {} (cube)", &id[..12])),
        "{first:?}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.ends_with("/2 frames done") && !l.starts_with("unknown")),
        "the panel shows progress: {first:?}"
    );
    let last = lines(&seen["final_poll"]);
    assert!(
        last.contains(&"done: 2/2 frames done".to_string()),
        "{last:?}"
    );

    for f in [2, 3] {
        let file = collect.join(format!("frame_{f:04}.png"));
        wait_for(&format!("{} collected", file.display()), || {
            file.is_file().then_some(())
        })
        .unwrap_or_else(|| panic!("frame {f} never collected\n{}", node.log_text()));
        let (w, h, _) = decode_png(&file);
        assert_eq!((w, h), (64, 48));
    }
    assert_eq!(
        std::fs::read_to_string(&opened).unwrap(),
        format!("{}/#job={id}", node.api)
    );
}

/// Every refusal reaches the artist as the operator's report, in words:
/// no node listening, a wrong token, a field the node refuses, a backwards
/// range, a file never saved. None is a traceback, and no job is made.
#[test]
fn addon_reports_refusals_in_words() {
    let Some(blender) = blender_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scene = tmp.path().join("cube.blend");
    make_blend(&blender, &scene);
    let node = NodeProc::start(&["--web-token", TOKEN]);
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let not_a_dir = tmp.path().join("a-file");
    std::fs::write(&not_a_dir, b"").unwrap();

    let seen = drive_blender(
        &blender,
        tmp.path(),
        Some(&scene),
        json!({
            "addon": repo().join("contrib/blender/renderswarm_addon.py"),
            "mode": "errors",
            "api": nobody,
            "node": node.api,
            "token": TOKEN,
            "not_a_dir": not_a_dir,
        }),
        &[],
    );
    let said = |k: &str| seen[k].as_str().unwrap().to_string();

    let unreachable = said("unreachable");
    assert!(
        unreachable.contains(&format!("cannot reach the renderswarm node at {nobody}")),
        "{unreachable}"
    );
    assert!(
        lines(&seen["unreachable_panel"])
            .iter()
            .any(|l| l.starts_with("cannot reach the renderswarm node")),
        "the panel shows the error too"
    );
    assert!(
        said("bad_token").contains("requires its web token"),
        "{}",
        said("bad_token")
    );
    assert!(
        said("bad_field").contains("refused: out: ")
            && said("bad_field").contains("not a directory"),
        "{}",
        said("bad_field")
    );
    assert!(
        said("backwards").contains("ends (1) before it starts (3)"),
        "{}",
        said("backwards")
    );
    assert!(
        said("never_saved").contains("Save the .blend file first"),
        "{}",
        said("never_saved")
    );
    let jobs: Vec<JobView> = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/jobs", node.api))
        .bearer_auth(TOKEN)
        .send()
        .and_then(|r| r.json())
        .unwrap();
    assert!(
        jobs.is_empty(),
        "a refused submission made a job: {jobs:#?}"
    );
}
