//! Crash loops: a job on three nodes while, again and again, a node picked
//! at random is killed with `kill -9` and restarted on the same data. The
//! job finishes, every frame is right, every node's ledger opens each time
//! and all three converge.
//!
//! Kills are paced by progress (every few frames), not by a clock, so the
//! test does the same on a fast or a loaded machine. A frame takes 0.4 s,
//! so a few frames last longer than a restart: with 50 ms frames, a job of
//! 60 once finished within 2.5 s, before the third kill. CI runs 60 frames;
//! `RENDERSWARM_CRASH_FRAMES=200 cargo test --test it crash_loop -- --nocapture`
//! runs the full 200.

use std::time::Instant;

use renderswarm::ledger::JobStatus;

use crate::harness::*;

#[test]
fn a_job_survives_nodes_killed_and_restarted_over_and_over() {
    let frames: u64 = std::env::var("RENDERSWARM_CRASH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let step = (frames / 12).max(3);
    let engine = "w=sh -c 'sleep 0.4; echo frame $3 > \"$2/frame_$(printf %04d $3).txt\"' sh {scene} {output} {frame}";
    let mut nodes = swarm_of(3, &["--engine-command", engine]);
    let orbit = example("orbit.toml");
    let job = nodes[0].submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        &format!("1-{frames}"),
        "--engine",
        "w",
    ]);
    let started = Instant::now();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0u32;
    let mut last = 0;
    loop {
        let seen = wait_for("the job moves on", || {
            let best = nodes
                .iter()
                .filter_map(|n| n.try_job(&job.id))
                .max_by_key(|j| (j.status == JobStatus::Done, j.frames_done))?;
            (best.status == JobStatus::Done || best.frames_done >= last + step).then_some(best)
        })
        .expect("the job stopped making progress under the kills");
        if seen.status == JobStatus::Done {
            break;
        }
        last = seen.frames_done;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % 3) as usize;
        // A restarted node listens on a new port (mDNS is off in tests), so
        // it is given both others' current addresses, as a studio's nodes
        // know each other's. Given only one, it could be left alone for good
        // once that one restarted in turn: nobody else knew where it was.
        let peers: Vec<String> = (0..3)
            .filter(|&i| i != victim)
            .map(|i| nodes[i].addr().to_string())
            .collect();
        let mut args = vec!["--engine-command", engine];
        for p in &peers {
            args.extend(["--peer", p.as_str()]);
        }
        // `restart` kills with SIGKILL, then starts on the same data: the
        // ledger must open after a crash at any point.
        nodes[victim].restart(&args);
        kills += 1;
    }
    let took = started.elapsed();
    let converged = wait_for("every ledger converges", || {
        let d: Vec<String> = nodes.iter().map(|n| n.digest()).collect();
        d.iter().all(|x| *x == d[0]).then_some(())
    });
    if converged.is_none() {
        let all: Vec<&NodeProc> = nodes.iter().collect();
        let ledgers: Vec<String> = nodes
            .iter()
            .map(|n| {
                let j = n.job(&job.id);
                let tasks: Vec<String> = j
                    .tasks
                    .iter()
                    .flatten()
                    .map(|t| format!("{}:{:?}:{}", t.index, t.status, t.attempts))
                    .collect();
                format!("digest {} {:?} {}", n.digest(), j.status, tasks.join(" "))
            })
            .collect();
        panic!(
            "the three ledgers do not converge:\n{}\n{}",
            ledgers.join("\n"),
            views(&all)
        );
    }
    let done = nodes[0].job(&job.id);
    println!(
        "crash loop: {frames} frames on 3 nodes with {kills} kill -9s in {:.1} s; renders started {}, wasted {}",
        took.as_secs_f64(),
        done.renders_started,
        done.renders_wasted
    );
    assert!(kills >= 3, "too few kills to mean anything: {kills}");
    assert_eq!(done.status, JobStatus::Done);
    let out = tempfile::tempdir().unwrap();
    let res = nodes[1].cli(&["fetch", &job.id, "--out", out.path().to_str().unwrap()]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for f in 1..=frames {
        let text = std::fs::read_to_string(out.path().join(format!("frame_{f:04}.txt"))).unwrap();
        assert_eq!(text.trim(), format!("frame {f}"));
    }
}
