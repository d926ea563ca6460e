//! Shared test machinery: real `swarm node` processes, the real CLI, and
//! waiting on events with generous deadlines instead of fixed sleeps.
//!
//! What belongs here: helpers only; no test functions.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use renderswarm::node::views::JobView;

/// How long any one event may take before a test fails. Generous: the CI
/// machine is shared and slow, and debug builds render slowly.
pub const DEADLINE: Duration = Duration::from_secs(180);

pub fn swarm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_swarm")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// Tests that start nodes run one at a time: on a 2-core machine, two
/// swarms rendering at once starve each other's heartbeats, and the tests
/// measure leases and failover in seconds. The first node a test starts
/// takes this lock; the test's thread holds it until the test ends.
static ONE_SWARM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    static HOLDS_SWARM_LOCK: std::cell::RefCell<Option<std::sync::MutexGuard<'static, ()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Take the one-swarm-at-a-time lock for this test's thread (once).
pub fn exclusive() {
    HOLDS_SWARM_LOCK.with(|held| {
        if held.borrow().is_none() {
            let guard = ONE_SWARM_AT_A_TIME
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *held.borrow_mut() = Some(guard);
        }
    });
}

static LOGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A `swarm node` process with its own data directory, serving its API on
/// a port the OS chose.
pub struct NodeProc {
    pub child: Child,
    pub data: PathBuf,
    pub api: String,
    /// Where it listens for peers, as `/ip4/.../tcp/PORT/p2p/ID`.
    pub listen: Vec<String>,
    /// Its peer id.
    pub id: String,
    pub log: PathBuf,
    /// The web token its API requires, if any.
    pub token: Option<String>,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
}

/// How a node process is started, beyond its arguments.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// A command the node runs under (`ip netns exec NS`).
    pub wrapper: Vec<String>,
    /// Its `--web` address (default `127.0.0.1:0`).
    pub web: Option<String>,
    /// Its `--web-token`.
    pub token: Option<String>,
}

impl NodeProc {
    /// Start a node in a fresh temporary data directory.
    pub fn start(args: &[&str]) -> NodeProc {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut n = NodeProc::start_in(&data, args);
        n._tmp = Some(tmp);
        n
    }

    /// Start a node on data directory `data` (which may already hold a
    /// ledger), listening on loopback with mDNS off: tests must not find each
    /// other's nodes.
    pub fn start_in(data: &Path, args: &[&str]) -> NodeProc {
        let mut all = vec!["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"];
        all.extend_from_slice(args);
        NodeProc::start_raw(data, &all)
    }

    /// Start a node with exactly `args` (besides `--data` and `--web`).
    pub fn start_raw(data: &Path, args: &[&str]) -> NodeProc {
        NodeProc::launch(data, args, &Launch::default())
    }

    /// Start a node with exactly `args` (besides `--data`, `--web` and
    /// `--web-token`), as `how` says.
    pub fn launch(data: &Path, args: &[&str], how: &Launch) -> NodeProc {
        exclusive();
        let log = data.with_extension(format!(
            "log{}",
            LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stderr = std::fs::File::create(&log).unwrap();
        let mut command = match how.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(swarm_bin());
                c
            }
            None => Command::new(swarm_bin()),
        };
        command
            .arg("node")
            .arg("--data")
            .arg(data)
            .args(["--web", how.web.as_deref().unwrap_or("127.0.0.1:0")]);
        if let Some(token) = &how.token {
            command.args(["--web-token", token]);
        }
        let mut child = command
            .args(&args)
            .env("SWARM_LOG", "info,renderswarm=debug,libp2p=warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn swarm node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listen = Vec::new();
        let (api, id) = loop {
            let Ok(line) = rx.recv_timeout(DEADLINE) else {
                let _ = child.kill();
                panic!(
                    "node did not start; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some(addr) = line.strip_prefix("listening on ") {
                listen.push(addr.trim().to_string());
            } else if let Some(rest) = line.split(" serving ").nth(1) {
                let id = line
                    .split('(')
                    .nth(1)
                    .and_then(|s| s.split(')').next())
                    .unwrap_or("")
                    .to_string();
                break (rest.trim().to_string(), id);
            }
        };
        NodeProc {
            child,
            data: data.to_path_buf(),
            api,
            listen,
            id,
            log,
            token: how.token.clone(),
            _tmp: None,
            args,
        }
    }

    /// Start this node again on its data directory (after `kill9` or
    /// `terminate`), with `args`. The data directory lives on.
    pub fn restart(&mut self, args: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let tmp = self._tmp.take();
        let mut next = NodeProc::start_in(&self.data.clone(), args);
        next._tmp = tmp;
        std::mem::swap(self, &mut next);
    }

    /// Run the CLI against this node.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut c = cli_command(&self.api, args);
        if let Some(token) = &self.token {
            c.env("SWARM_WEB_TOKEN", token);
        }
        c.output().expect("run swarm")
    }

    /// GET a JSON document from this node's API.
    pub fn get(&self, path: &str) -> serde_json::Value {
        get_json_with(&format!("{}{path}", self.api), self.token.as_deref())
    }

    /// `swarm job JOB --json`.
    pub fn job(&self, id: &str) -> JobView {
        let out = self.cli(&["job", id, "--json"]);
        assert!(
            out.status.success(),
            "swarm job failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `swarm job JOB --json`, or `None` while the node does not know the job.
    pub fn try_job(&self, id: &str) -> Option<JobView> {
        let out = self.cli(&["job", id, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `swarm jobs --json`.
    pub fn jobs(&self) -> Vec<JobView> {
        self.jobs_listed(&["jobs", "--json"])
    }

    /// Every job, archived ones too (`swarm jobs --archived --json`).
    pub fn all_jobs(&self) -> Vec<JobView> {
        self.jobs_listed(&["jobs", "--archived", "--json"])
    }

    fn jobs_listed(&self, args: &[&str]) -> Vec<JobView> {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "swarm jobs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Submit and return the new job.
    pub fn submit(&self, args: &[&str]) -> JobView {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "submit failed: {}\nnode log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Wait until `job` satisfies `cond`, returning it.
    pub fn wait_job(&self, id: &str, what: &str, cond: impl Fn(&JobView) -> bool) -> JobView {
        let mut last = None;
        let found = wait_for(what, || {
            // The node may not know the job yet (it is still syncing).
            let j = self.try_job(id)?;
            let ok = cond(&j);
            last = Some(j.clone());
            ok.then_some(j)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{what}: last seen {last:#?}\nnode log:\n{}",
                self.log_text()
            )
        })
    }

    /// A dialable address of this node.
    pub fn addr(&self) -> &str {
        self.listen
            .first()
            .map(String::as_str)
            .expect("the node listens")
    }

    /// `GET /api/v1/node`.
    pub fn info(&self) -> serde_json::Value {
        self.get("/api/v1/node")
    }

    /// `GET /api/v1/nodes`.
    pub fn nodes(&self) -> Vec<renderswarm::node::views::NodeView> {
        serde_json::from_value(self.get("/api/v1/nodes")).unwrap()
    }

    /// The hash over this node's whole ledger.
    pub fn digest(&self) -> String {
        self.info()["ledger_digest"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Wait until this node sees `n` live nodes, itself included.
    pub fn wait_alive(&self, n: usize) {
        wait_for(&format!("{n} live nodes"), || {
            (self.nodes().iter().filter(|v| v.alive).count() >= n).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "never saw {n} live nodes: {:#?}\n{}",
                self.nodes(),
                self.log_text()
            )
        });
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(20_000);
        text[text
            .char_indices()
            .map(|(i, _)| i)
            .find(|i| *i >= start)
            .unwrap_or(0)..]
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the CLI against `api`.
pub fn cli(api: &str, args: &[&str]) -> Output {
    cli_command(api, args).output().expect("run swarm")
}

fn cli_command(api: &str, args: &[&str]) -> Command {
    let mut c = Command::new(swarm_bin());
    c.args(args)
        .env("SWARM_API", api)
        .env_remove("SWARM_WEB_TOKEN");
    c
}

/// GET a JSON document.
pub fn get_json(url: &str) -> serde_json::Value {
    get_json_with(url, None)
}

/// GET a JSON document, with a web token when given.
pub fn get_json_with(url: &str, token: Option<&str>) -> serde_json::Value {
    let mut req = reqwest::blocking::Client::new().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Start `n` nodes joined by `--peer` to the first, each with `args`.
pub fn swarm_of(n: usize, args: &[&str]) -> Vec<NodeProc> {
    let first = NodeProc::start(args);
    let peer = first.addr().to_string();
    let mut nodes = vec![first];
    for _ in 1..n {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--peer", &peer]);
        nodes.push(NodeProc::start(&a));
    }
    for node in &nodes {
        node.wait_alive(n);
    }
    nodes
}

/// A submitter that renders nothing and `n` renderers tagged `tag` (jobs
/// that require the tag run only on them), all running `engine`, all seeing
/// each other alive.
pub fn submitter_and_renderers(engine: &str, tag: &str, n: usize) -> Vec<NodeProc> {
    let submitter = NodeProc::start(&["--engine-command", engine]);
    let peer = submitter.addr().to_string();
    let mut nodes = vec![submitter];
    for _ in 0..n {
        nodes.push(NodeProc::start(&[
            "--engine-command",
            engine,
            "--tags",
            tag,
            "--peer",
            &peer,
        ]));
    }
    for node in &nodes {
        node.wait_alive(n + 1);
    }
    nodes
}

/// A Prometheus counter's value from a node's `/metrics`.
pub fn metric(node: &NodeProc, name: &str) -> f64 {
    metric_where(node, name, "")
}

/// The value of the first sample of `name` on `node` whose labels contain
/// `label` (such as `effect="changed"`).
pub fn metric_where(node: &NodeProc, name: &str, label: &str) -> f64 {
    let mut req = reqwest::blocking::Client::new().get(format!("{}/metrics", node.api));
    if let Some(token) = &node.token {
        req = req.bearer_auth(token);
    }
    let text = req.send().and_then(|r| r.text()).unwrap_or_default();
    let value = text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        // `name{labels} value` or `name value`.
        let rest = match rest.strip_prefix('{') {
            Some(r) => {
                let (labels, value) = r.split_once('}')?;
                labels.contains(label).then_some(value)?
            }
            None if label.is_empty() => rest,
            None => return None,
        };
        rest.trim().parse().ok()
    });
    value.unwrap_or_else(|| panic!("{name}{{{label}}} missing from {}'s /metrics", node.api))
}

/// Whether the store under `data` holds a chunk with exactly `content`.
pub fn store_holds(data: &std::path::Path, content: &[u8]) -> bool {
    let hash = blake3::hash(content).to_hex().to_string();
    data.join("store")
        .join("blobs")
        .join(&hash[..2])
        .join(&hash)
        .is_file()
}

/// Poll `f` until it returns `Some`, for up to [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > DEADLINE {
            eprintln!("gave up waiting: {what}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Decode a PNG, returning (width, height, pixels).
pub fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Blender's path; `None` (with a note) when missing outside CI. Under
/// `CI=true` a missing Blender fails the test: a CI image that lost
/// Blender must not pass silently.
pub fn blender_or_skip() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("blender"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `blender` is not on PATH"
        );
        eprintln!("note: blender not on PATH; skipping a real-Blender test");
    }
    found
}

/// Whether network namespaces can be built here (root and `tools`) for
/// `what`; under `CI=true` they must, and a machine that cannot fails.
pub fn lab_or_skip(tools: &[&str], what: &str) -> bool {
    let Some(why) = renderswarm::netlab::unavailable(tools) else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {what} cannot run: {why}"
    );
    eprintln!("note: {what} is not run here: {why}");
    false
}

/// Build a small Cycles scene (64x48, 4 samples, denoising off because
/// Debian's Blender lacks OpenImageDenoise, an animated cube, frames 1-3).
pub fn make_blend(blender: &Path, path: &Path) {
    exclusive();
    const SCRIPT: &str = r#"
import bpy, sys
path = sys.argv[sys.argv.index("--") + 1]
s = bpy.context.scene
for o in list(bpy.data.objects):
    bpy.data.objects.remove(o, do_unlink=True)
bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
cube = bpy.context.active_object
cube.keyframe_insert("rotation_euler", frame=1)
cube.rotation_euler = (0.0, 0.0, 1.0)
cube.keyframe_insert("rotation_euler", frame=3)
light = bpy.data.objects.new("L", bpy.data.lights.new("L", "POINT"))
light.data.energy = 1000
light.location = (4, -4, 6)
s.collection.objects.link(light)
cam = bpy.data.objects.new("C", bpy.data.cameras.new("C"))
cam.location = (6, -6, 5)
cam.rotation_euler = (1.1, 0, 0.785)
s.collection.objects.link(cam)
s.camera = cam
s.render.engine = "CYCLES"
s.cycles.device = "CPU"
s.cycles.samples = 4
s.cycles.seed = 0
s.cycles.use_denoising = False
s.render.resolution_x, s.render.resolution_y, s.render.resolution_percentage = 64, 48, 100
s.frame_start, s.frame_end = 1, 3
s.render.image_settings.file_format = "PNG"
bpy.ops.wm.save_as_mainfile(filepath=path)
"#;
    let status = Command::new(blender)
        .args([
            "-b",
            "--factory-startup",
            "--python-exit-code",
            "1",
            "--python-expr",
            SCRIPT,
            "--",
        ])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "blender could not make the test scene");
}

/// Render frames directly with `blender -b`, as a studio would by hand.
pub fn render_direct(blender: &Path, scene: &Path, out: &Path, frames: &str) {
    let status = Command::new(blender)
        .args(["-b", "--disable-autoexec"])
        .arg(scene)
        .arg("-o")
        .arg(out.join("frame_####"))
        .args(["-f", frames])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Submits the example scene on `node` as frames `frames` of the `sleepy`
/// command engine (see [`sleepy`]), with `more` flags.
pub fn submit_sleepy(node: &NodeProc, frames: &str, more: &[&str]) -> JobView {
    let orbit = example("orbit.toml");
    let mut args = vec![
        orbit.to_str().unwrap(),
        "--frames",
        frames,
        "--engine",
        "sleepy",
    ];
    args.extend_from_slice(more);
    node.submit(&args)
}

/// A command engine named `sleepy` that takes `secs` per frame and writes a
/// small file naming its frame: the farm's behaviour without the CPU cost
/// of rendering.
pub fn sleepy(secs: &str) -> String {
    format!(
        "sleepy=sh -c 'sleep {secs}; echo frame $3 > \"$2/frame_$(printf %04d $3).txt\"' sh {{scene}} {{output}} {{frame}}"
    )
}

/// Wait until every one of `nodes` has rendered a task of `job` (and so
/// holds its scene), as `nodes[0]` sees it.
pub fn wait_every_node_rendered(nodes: &[NodeProc], job: &str) {
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    nodes[0].wait_job(job, "every node has rendered", |j| {
        let who: std::collections::BTreeSet<&str> = j
            .tasks
            .iter()
            .flatten()
            .filter(|t| t.status == renderswarm::ledger::TaskStatus::Done)
            .filter_map(|t| t.node.as_deref())
            .collect();
        ids.iter().all(|id| who.contains(id))
    });
}

/// Wait until `job` is done on every one of `nodes` and their ledgers are
/// the same.
pub fn wait_done_and_converged(nodes: &[NodeProc], job: &str) {
    for n in nodes {
        n.wait_job(job, "the job is done everywhere", |j| {
            j.status == renderswarm::ledger::JobStatus::Done
        });
    }
    wait_for("ledgers converge", || {
        let all: Vec<String> = nodes.iter().map(|n| n.digest()).collect();
        all.iter().all(|d| *d == all[0]).then_some(())
    })
    .expect("every node holds the same ledger");
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
pub fn without_colours(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// What each node sees of the others (peer ids shortened to their last 6
/// characters), and the last lines of its log about links.
pub fn views(all: &[&NodeProc]) -> String {
    let short = |id: &str| id[id.len().saturating_sub(6)..].to_string();
    let mut out = String::new();
    for node in all {
        let seen: Vec<String> = node
            .nodes()
            .iter()
            .map(|v| format!("{}:{}:{}ms", short(&v.id), v.alive, v.last_seen_ms))
            .collect();
        out += &format!("node {} sees {}\n", short(&node.id), seen.join(" "));
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        let links: Vec<&str> = log
            .lines()
            .filter(|l| {
                let keys = [
                    "connection",
                    "ping",
                    "dial failed",
                    "reached after",
                    "mDNS",
                    "is alive",
                    "bad input",
                ];
                keys.iter().any(|k| l.contains(k))
                    && !(l.contains("node::inbound") && l.contains("dial failed"))
            })
            .collect();
        for line in &links[links.len().saturating_sub(30)..] {
            out += &format!("    {}\n", without_colours(line));
        }
    }
    out
}
