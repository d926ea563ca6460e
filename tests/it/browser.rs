//! The status page in a real browser: headless Chromium (Debian's
//! `/usr/bin/chromium`) driven by playwright-core (npm, in `tests/browser/`)
//! against real nodes.
//!
//! What belongs here: what a person sees and does in the page. Each test
//! starts its nodes, then runs one script of `tests/browser/` and asserts
//! that it passed; the script prints each check and the figures it measured,
//! and saves screenshots under `target/screenshots/` (or under
//! `$CARGO_TARGET_DIR`). The scripts wait on the page's own state with
//! generous deadlines; this side only bounds the whole run.
//!
//! Without Chromium, Node.js or `tests/browser/node_modules` (made by
//! `npm ci --prefix tests/browser`) a test prints a note and passes, except
//! under `CI=true`, where it fails naming what is missing: a CI image that
//! lost its browser must not pass silently.
//!
//! The browser tests take a lock and run one at a time: three Chromiums at
//! once on a 2-core machine would starve each other and skew the measured
//! frame times.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::harness::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The most one script may take; each script's own watchdog fires first
/// and says which step hung.
const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// Hold while a browser runs. A test that panicked with the lock held
/// leaves nothing behind that the next one must not touch.
fn one_browser() -> MutexGuard<'static, ()> {
    ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

fn browser_dir() -> PathBuf {
    repo().join("tests").join("browser")
}

/// `$CARGO_TARGET_DIR/screenshots` (relative to the repository if
/// relative), else `<repo>/target/screenshots`.
fn screenshots() -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| repo().join(t))
        .unwrap_or_else(|| repo().join("target"));
    target.join("screenshots").display().to_string()
}

/// What the browser tests need and this machine lacks.
fn missing() -> Vec<&'static str> {
    let mut out = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        out.push("/usr/bin/chromium (apt-get install chromium)");
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        out.push("node on PATH (Node.js 20 or later)");
    }
    let pw = browser_dir().join("node_modules/playwright-core/package.json");
    if !pw.is_file() {
        out.push("tests/browser/node_modules/playwright-core (run: npm ci --prefix tests/browser)");
    }
    out
}

/// Whether a browser test can run here; under `CI=true` a missing piece
/// fails the test instead.
fn browser_or_skip() -> bool {
    let missing = missing();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the browser tests cannot run; missing: {}",
        missing.join("; ")
    );
    eprintln!(
        "note: skipping a browser test; missing: {}",
        missing.join("; ")
    );
    false
}

/// Forward `from`'s lines to `tx` (and so to the test's output).
fn forward(from: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Kill the script and the Chromium it started: it leads its own group.
fn kill_group(child: &mut Child) {
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// Run `node tests/browser/SCRIPT ARGS`, printing its output as it comes;
/// answer that output once it exits 0. Panics, with the output and the
/// nodes' logs, when it fails or outlives [`SCRIPT_LIMIT`].
fn run_script(script: &str, args: &[&str], nodes: &[&NodeProc]) -> String {
    let mut child = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node {script}: {e}"));
    let (tx, rx) = mpsc::channel();
    forward(child.stdout.take().expect("piped stdout"), tx.clone());
    forward(child.stderr.take().expect("piped stderr"), tx);
    let start = Instant::now();
    let mut out = String::new();
    // Until both pipes close (the script and everything it started are
    // gone), or the limit passes.
    let timed_out = loop {
        let left = SCRIPT_LIMIT.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("[{script}] {line}");
                out.push_str(&line);
                out.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => break true,
        }
    };
    if timed_out {
        kill_group(&mut child);
    }
    let status = child.wait().expect("wait for the script");
    if timed_out || !status.success() {
        let logs: String = nodes
            .iter()
            .map(|n| format!("\n--- log of node {}:\n{}", n.api, n.log_text()))
            .collect();
        panic!(
            "{script} {}:\n{out}{logs}",
            if timed_out {
                format!("ran past {SCRIPT_LIMIT:?} and was killed")
            } else {
                format!("failed ({status})")
            }
        );
    }
    out
}

#[test]
fn the_page_submits_watches_pauses_and_shows_a_frame_on_a_swarm() {
    if !browser_or_skip() {
        return;
    }
    let _one = one_browser();
    let nodes = swarm_of(2, &["--tags", "farm"]);
    let orbit = example("orbit.toml").display().to_string();
    // 144 frames (the loop three times): enough that the job is still
    // under way when the page pauses it, on a fast machine too.
    let out = run_script(
        "swarm_page.mjs",
        &[
            "--url",
            &nodes[0].api,
            "--scene",
            &orbit,
            "--frames",
            "1-144",
            "--nodes",
            "2",
            "--tags",
            "farm",
            "--shots",
            &screenshots(),
        ],
        &nodes.iter().collect::<Vec<_>>(),
    );
    assert!(out.contains("\nPASS"), "{out}");
    // The other node agrees: the uploaded job is done, every frame, and
    // archived (the page archived it on the first node at the end).
    let jobs = nodes[1].all_jobs();
    let job = jobs
        .iter()
        .find(|j| j.name == "orbit")
        .unwrap_or_else(|| panic!("the second node lacks the job: {jobs:#?}"));
    assert_eq!(job.frames_done, 144, "{job:#?}");
    let id = job.id.clone();
    let archived = wait_for("the archive reaches the second node", || {
        nodes[1]
            .all_jobs()
            .iter()
            .any(|j| j.id == id && j.archived)
            .then_some(())
    });
    assert!(
        archived.is_some(),
        "the second node never saw the job archived"
    );
    assert!(!nodes[1].jobs().iter().any(|j| j.id == id));
}

#[test]
fn the_page_stays_smooth_with_50_nodes_and_10000_frames() {
    if !browser_or_skip() {
        return;
    }
    let _one = one_browser();
    let node = NodeProc::start(&["--test-synthetic-farm", "49,10000"]);
    // A small real job, for the page to switch away from the big one and
    // back (each switch back is one full render of the big grid).
    let orbit = example("orbit.toml").display().to_string();
    let small = node.submit(&[&orbit, "--frames", "1-2"]);
    node.wait_job(&small.id, "the small job finishes", |j| j.frames_done == 2);
    node.wait_alive(50);
    let out = run_script(
        "big_farm.mjs",
        &[
            "--url",
            &node.api,
            "--nodes",
            "50",
            "--frames",
            "10000",
            "--seconds",
            "10",
            "--shots",
            &screenshots(),
        ],
        &[&node],
    );
    assert!(out.contains("\nPASS"), "{out}");
    assert!(
        out.contains("\nperf {"),
        "the figures were not printed: {out}"
    );
}

#[test]
fn the_page_asks_for_the_web_token_then_loads() {
    if !browser_or_skip() {
        return;
    }
    let _one = one_browser();
    const TOKEN: &str = "s3cret";
    let node = NodeProc::start(&["--web-token", TOKEN]);
    let api = format!("{}/api/v1", node.api);
    let c = Client::new();
    let orbit = example("orbit.toml").display().to_string();
    let job: Value = c
        .post(format!("{api}/jobs"))
        .bearer_auth(TOKEN)
        .header("x-renderswarm", "1")
        .json(&json!({ "scene": orbit, "frames": "1-3" }))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("submit with the token: {e}\n{}", node.log_text()));
    let id = job["id"].as_str().expect("a job id").to_string();
    wait_for("the job finishes", || {
        let j: Value = c
            .get(format!("{api}/jobs/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .ok()?
            .json()
            .ok()?;
        (j["status"] == "done").then_some(())
    })
    .unwrap_or_else(|| panic!("the job never finished\n{}", node.log_text()));
    let out = run_script(
        "token.mjs",
        &[
            "--url",
            &node.api,
            "--token",
            TOKEN,
            "--shots",
            &screenshots(),
        ],
        &[&node],
    );
    assert!(out.contains("\nPASS"), "{out}");
}
