//! One real `swarm node` process driven by the real CLI: rendering,
//! determinism, failures and retries, crash recovery.
//!
//! What belongs here: behaviour of a lone node as a user meets it through
//! `swarm submit`, `swarm job` and friends.

use std::path::Path;

use renderswarm::ledger::{JobStatus, TaskStatus};
use renderswarm::render::builtin;

use crate::harness::*;

fn pngs_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The issue's first acceptance line: 24 valid PNGs, and frame 7 rendered
/// again gives identical bytes.
#[test]
fn submit_wait_out_renders_24_frames_deterministically() {
    let node = NodeProc::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let orbit = example("orbit.toml");
    let res = node.cli(&[
        "submit",
        orbit.to_str().unwrap(),
        "--engine",
        "builtin",
        "--frames",
        "1-24",
        "--wait",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&res.stderr),
        node.log_text()
    );
    let names = pngs_in(out.path());
    let expected: Vec<String> = (1..=24).map(|f| format!("frame_{f:04}.png")).collect();
    assert_eq!(names, expected);
    for n in &names {
        let (w, h, _) = decode_png(&out.path().join(n));
        assert_eq!((w, h), (320, 180), "{n} decodes at the scene's resolution");
    }

    // Frame 7 again, through the farm: the same bytes.
    let again = tempfile::tempdir().unwrap();
    let res = node.cli(&[
        "submit",
        orbit.to_str().unwrap(),
        "--frames",
        "7",
        "--wait",
        "--out",
        again.path().to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let first = std::fs::read(out.path().join("frame_0007.png")).unwrap();
    let second = std::fs::read(again.path().join("frame_0007.png")).unwrap();
    assert_eq!(first, second, "frame 7 rendered twice differs");

    // And rendered directly by the library, with another thread count: the same bytes.
    let scene = builtin::Scene::parse(&std::fs::read_to_string(&orbit).unwrap()).unwrap();
    let direct = builtin::render_png(
        &scene,
        7,
        &builtin::RenderOptions { threads: 1 },
        &std::sync::atomic::AtomicBool::new(false),
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        first, direct,
        "the farm's frame 7 differs from a direct render"
    );
}

/// Crash, hang and no-output engines: each task fails with its reason,
/// is retried up to max attempts, the job ends Failed, and the node goes on
/// serving and rendering other jobs.
#[test]
fn failing_engines_fail_tasks_with_reasons_and_the_node_carries_on() {
    let node = NodeProc::start(&[
        "--engine-command",
        "crash=sh -c 'echo about to crash; kill -SEGV $$'",
        "--engine-command",
        "hang=sleep 600",
        "--engine-command",
        "nothing=true",
        "--engine-command",
        "exit3=sh -c 'echo Error: the license server is down >&2; exit 3'",
    ]);
    let orbit = example("orbit.toml");
    let scene = orbit.to_str().unwrap();
    let cases = [
        ("crash", vec!["--max-attempts", "2"], "signal"),
        (
            "hang",
            vec!["--max-attempts", "2", "--timeout", "1"],
            "timeout",
        ),
        ("nothing", vec!["--max-attempts", "2"], "frame"),
        ("exit3", vec!["--max-attempts", "2"], "license server"),
    ];
    let mut ids = Vec::new();
    for (engine, extra, _) in &cases {
        let mut args = vec![scene, "--frames", "1-2", "--engine", engine];
        args.extend(extra.iter().copied());
        ids.push(node.submit(&args).id);
    }
    for ((engine, _, why), id) in cases.iter().zip(&ids) {
        let job = node.wait_job(id, &format!("{engine} job fails"), |j| {
            j.status == JobStatus::Failed
        });
        for t in job.tasks.as_ref().unwrap() {
            assert_eq!(t.status, TaskStatus::Failed, "{engine}");
            assert_eq!(t.failures, 2, "{engine}: retried up to max attempts");
            let reason = t.reason.clone().unwrap_or_default().to_lowercase();
            assert!(
                reason.contains(why),
                "{engine}: reason `{reason}` should mention `{why}`"
            );
        }
        // The reason is visible to a person in `swarm job`.
        let shown = node.cli(&["job", id]);
        assert!(String::from_utf8_lossy(&shown.stdout).contains("failed"));
    }
    // The node keeps rendering other jobs.
    let ok = node.submit(&[scene, "--frames", "1-2"]);
    node.wait_job(&ok.id, "a good job after failures finishes", |j| {
        j.status == JobStatus::Done
    });
}

/// `submit --wait` exits non-zero and names the failed frames.
#[test]
fn wait_exits_non_zero_naming_failed_frames() {
    let node = NodeProc::start(&["--engine-command", "bad=sh -c 'exit 7'"]);
    let orbit = example("orbit.toml");
    let res = node.cli(&[
        "submit",
        orbit.to_str().unwrap(),
        "--frames",
        "1-3",
        "--engine",
        "bad",
        "--max-attempts",
        "1",
        "--wait",
    ]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("failed frames"), "{err}");
    for f in ["frames 1 ", "frames 2 ", "frames 3 "] {
        assert!(err.contains(f), "`{f}` missing from: {err}");
    }
}

/// `kill -9` mid-job, restart on the same data: the job is still there,
/// done frames stay done (same outputs), the interrupted tasks run again.
/// Frames after the third wait for a gate file that appears only after the
/// kill, so a task running at the kill cannot have finished just before it
/// (with a plain sleep one sometimes had, and was rightly not rerun).
#[test]
fn kill_9_mid_job_then_restart_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let gate = tmp.path().join("gate");
    let slow = format!(
        "slow=sh -c 'if [ $3 -gt 3 ]; then while [ ! -e \"$4\" ]; do sleep 0.05; done; fi; sleep 0.1; cp \"$1\" \"$2/frame_$(printf %04d $3).txt\"' sh {{scene}} {{output}} {{frame}} {}",
        gate.display()
    );
    let slow = slow.as_str();
    let mut node = NodeProc::start_in(&data, &["--engine-command", slow]);
    let orbit = example("orbit.toml");
    let job = node.submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-12",
        "--engine",
        "slow",
    ]);
    // Every slot then holds a task waiting at the gate.
    let before = node.wait_job(&job.id, "some frames done, the rest waiting", |j| {
        j.frames_done >= 3 && j.tasks_running >= 1
    });
    node.kill9();
    std::fs::write(&gate, b"").unwrap();

    let node = NodeProc::start_in(&data, &["--engine-command", slow]);
    assert!(
        node.log_text().contains(NOT_CLOSED_CLEANLY),
        "a node killed mid-job leaves its ledger to be checked: {}",
        node.log_text()
    );
    let after = node.wait_job(&job.id, "job finishes after restart", |j| {
        j.status == JobStatus::Done
    });
    let (bt, at) = (before.tasks.unwrap(), after.tasks.unwrap());
    for (b, a) in bt.iter().zip(&at) {
        if b.status == TaskStatus::Done {
            assert_eq!(
                b.outputs, a.outputs,
                "task {} was done before the crash and kept its output",
                b.index
            );
            assert_eq!(a.attempts, 1, "task {} was not rendered again", a.index);
        }
    }
    let interrupted: Vec<_> = bt
        .iter()
        .filter(|t| t.status == TaskStatus::Running)
        .collect();
    // Its engine could not finish before the gate appeared, after the
    // kill: done now means rendered again. (Its attempts may read 1: a
    // start is durable with the next group commit, and one made in the
    // last moments before the kill is lost with the node.)
    assert!(!interrupted.is_empty());
    for t in interrupted {
        let again = &at[t.index as usize];
        assert_eq!(again.status, TaskStatus::Done, "{again:?}");
        assert_eq!(again.outputs.len(), again.frames.len(), "{again:?}");
    }
    assert_eq!(after.frames_done, 12);
}

/// What a node logs when it opens a ledger file that was not closed.
const NOT_CLOSED_CLEANLY: &str = "the ledger database was not closed cleanly";

/// A node stopped by SIGTERM closes its ledger file, so its next start opens
/// it at once instead of checking every page of it (as after `kill -9`,
/// above), and finds everything it had.
#[test]
fn a_node_stopped_by_sigterm_closes_its_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut node = NodeProc::start_in(&data, &[]);
    let orbit = example("orbit.toml");
    let job = node.submit(&[orbit.to_str().unwrap(), "--frames", "1-3"]);
    let before = node.wait_job(&job.id, "the job done", |j| j.status == JobStatus::Done);
    assert!(node.terminate().success(), "{}", node.log_text());
    assert!(
        node.log_text().contains("node stopped"),
        "{}",
        node.log_text()
    );

    let again = NodeProc::start_in(&data, &[]);
    let log = again.log_text();
    assert!(!log.contains(NOT_CLOSED_CLEANLY), "{log}");
    let after = again.job(&job.id);
    assert_eq!(after.status, JobStatus::Done);
    assert_eq!(after.frames_done, before.frames_done);
}

/// A task claimed ahead is made ready while the render before it runs: its
/// scene is unpacked before the slot frees, so the next engine starts at
/// once. The first job's engine waits for a gate file, so "before" needs no
/// clock.
#[test]
fn the_next_task_is_made_ready_while_the_render_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let gated = format!(
        "gated=sh -c 'while [ ! -e \"$4\" ]; do sleep 0.05; done; echo frame $3 > \"$2/frame_$(printf %04d $3).txt\"' sh {{scene}} {{output}} {{frame}} {}",
        gate.display()
    );
    let node = NodeProc::start(&[
        "--slots",
        "1",
        "--engine-command",
        &gated,
        "--engine-command",
        &sleepy("0"),
    ]);
    let first_scene = dir.path().join("first.txt");
    let second_scene = dir.path().join("second.txt");
    std::fs::write(&first_scene, "the first job's scene\n").unwrap();
    std::fs::write(&second_scene, "the second job's scene\n").unwrap();
    let first = node.submit(&[
        first_scene.to_str().unwrap(),
        "--frames",
        "1",
        "--engine",
        "gated",
    ]);
    node.wait_job(&first.id, "the gated render runs", |j| j.tasks_running == 1);
    let unpacked = || {
        std::fs::read_dir(node.data.join("scenes"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().len() == 64 && e.path().is_dir())
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(unpacked(), 1, "only the running job's scene is unpacked");
    // Two tasks: a node claims ahead only while a job has work to spare.
    let second = node.submit(&[
        second_scene.to_str().unwrap(),
        "--frames",
        "1-2",
        "--engine",
        "sleepy",
    ]);
    wait_for("the second job's scene is unpacked", || {
        (unpacked() == 2).then_some(())
    })
    .expect("the task claimed ahead has its scene unpacked before the slot frees");
    let now = node.job(&first.id);
    assert_eq!(
        now.tasks_running, 1,
        "the gated render still runs: {now:#?}"
    );
    assert_eq!(
        node.job(&second.id).tasks_done,
        0,
        "the second job's tasks wait for the slot"
    );
    std::fs::write(&gate, "").unwrap();
    for job in [&first.id, &second.id] {
        node.wait_job(job, "both jobs finish", |j| j.status == JobStatus::Done);
    }
}

/// The niceness field (19th) of `/proc/PID/stat`, read by the engine's own
/// shell and written as the frame.
#[cfg(target_os = "linux")]
const NICE_ENGINE: &str = r#"nice=sh -c 'read -r _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ n _ < /proc/$$/stat; printf %s "$n" > "$1/frame_$2.txt"' sh {output} {frame:04}"#;

/// This process's niceness; the node it starts inherits it.
#[cfg(target_os = "linux")]
fn own_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

/// Renders run niced (`--render-nice`, default 10), never less nice than
/// the node itself.
#[cfg(target_os = "linux")]
#[test]
fn renders_run_at_the_nodes_render_niceness() {
    let tiny = example("tiny.toml");
    for (flags, asked) in [(vec![], 10), (vec!["--render-nice", "3"], 3)] {
        let mut args = vec!["--engine-command", NICE_ENGINE];
        args.extend(flags);
        let node = NodeProc::start(&args);
        let out = tempfile::tempdir().unwrap();
        let res = node.cli(&[
            "submit",
            tiny.to_str().unwrap(),
            "--engine",
            "nice",
            "--frames",
            "1",
            "--wait",
            "--out",
            out.path().to_str().unwrap(),
        ]);
        assert!(res.status.success(), "{}", node.log_text());
        let nice = std::fs::read_to_string(out.path().join("frame_0001.txt")).unwrap();
        assert_eq!(nice, asked.max(own_nice()).to_string());
    }
}
