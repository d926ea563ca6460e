//! A node put to sleep takes no tasks: by its schedule, by hand, through a
//! restart; woken, it takes them again; put to sleep *now*, its renders go
//! back to the swarm without costing an attempt. Two real node processes.

use std::collections::BTreeSet;

use crate::harness::*;
use renderswarm::ledger::{JobStatus, TaskStatus};
use renderswarm::node::views::{JobView, NodeView};

/// The nodes that rendered the tasks of a finished job.
fn renderers(job: &JobView) -> BTreeSet<String> {
    job.tasks
        .iter()
        .flatten()
        .filter_map(|t| t.node.clone())
        .collect()
}

/// `node` as `seer` sees it, once `ok` holds.
fn wait_view(seer: &NodeProc, node: &str, what: &str, ok: impl Fn(&NodeView) -> bool) -> NodeView {
    wait_for(what, || {
        seer.nodes().into_iter().find(|n| n.id == node && ok(n))
    })
    .unwrap_or_else(|| panic!("{what}: {:#?}", seer.nodes()))
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_sleeping_node_takes_no_tasks_until_it_is_woken() {
    let engine = sleepy("0.2");
    let a = NodeProc::start(&["--engine-command", &engine]);
    let peer = a.addr().to_string();
    let b_args = [
        "--engine-command",
        &engine,
        "--sleep-schedule",
        "daily",
        "--tags",
        "night",
        "--peer",
        &peer,
    ];
    let mut b = NodeProc::start(&b_args);
    a.wait_alive(2);
    b.wait_alive(2);

    // Asleep all week by its schedule: the peer sees why, and runs it all.
    let seen = wait_view(&a, &b.id, "a sees b asleep", |n| n.state == "asleep");
    let why = seen.asleep.unwrap();
    assert_eq!(why, "by its schedule");
    let job = submit_sleepy(&a, "1-6", &[]);
    let done = a.wait_job(&job.id, "the job is done", |j| j.status == JobStatus::Done);
    assert_eq!(renderers(&done), BTreeSet::from([a.id.clone()]));
    let peers = stdout(&a.cli(&["peers"]));
    assert!(
        peers
            .lines()
            .any(|l| l.contains(&b.id[b.id.len() - 10..]) && l.contains("asleep")),
        "{peers}"
    );

    // A job only it can run waits, and says why.
    let night = submit_sleepy(&a, "1-2", &["--require", "night"]);
    let why = "the one node that can run it is asleep";
    a.wait_job(&night.id, "the job says why it waits", |j| {
        j.waiting.as_deref() == Some(why)
    });
    let shown = stdout(&a.cli(&["job", &night.id]));
    assert!(shown.contains(&format!("waiting  {why}")), "{shown}");

    // Woken by hand: it takes tasks again, that job's first.
    let said = stdout(&b.cli(&["wake"]));
    assert!(said.contains("is awake"), "{said}");
    wait_view(&a, &b.id, "a sees b awake", |n| n.asleep.is_none());
    let done = a.wait_job(&night.id, "the night job is done", |j| {
        j.status == JobStatus::Done
    });
    assert_eq!(renderers(&done), BTreeSet::from([b.id.clone()]));
    assert_eq!(done.waiting, None);
    let events = b.get("/api/v1/events").to_string();
    for said in [
        "is asleep by its schedule: it takes no new tasks",
        "is awake: it takes tasks",
    ] {
        assert!(events.contains(said), "{said} missing from {events}");
    }
    let job = submit_sleepy(&a, "1-12", &[]);
    let done = a.wait_job(&job.id, "the job is done", |j| j.status == JobStatus::Done);
    assert!(renderers(&done).contains(&b.id), "b rendered none of it");

    // Put to sleep by hand, it stays asleep through a restart...
    let said = stdout(&b.cli(&["sleep"]));
    assert!(
        said.contains("is asleep by hand: it takes no new tasks"),
        "{said}"
    );
    b.restart(&b_args);
    let me = b.nodes().remove(0);
    assert_eq!(me.asleep.as_deref(), Some("by hand"));
    assert_eq!(me.state, "asleep");
    // ...and woken, it stays awake through one, although its schedule says
    // asleep: a word by hand holds until the schedule changes ("daily"
    // never does).
    stdout(&b.cli(&["wake"]));
    b.restart(&b_args);
    let me = b.nodes().remove(0);
    assert_eq!((me.asleep, me.state.as_str()), (None, "idle"));
}

#[test]
fn sleep_now_gives_the_renders_under_way_back_without_costing_an_attempt() {
    let engine = sleepy("2");
    let nodes = swarm_of(2, &["--engine-command", &engine]);
    let (a, b) = (&nodes[0], &nodes[1]);
    // One attempt each: a render stopped by `sleep --now` that counted as
    // a failure would fail its task and the job.
    let job = submit_sleepy(a, "1-3", &["--max-attempts", "1"]);
    b.wait_job(&job.id, "b renders a task", |j| {
        j.tasks.iter().flatten().any(|t| {
            t.node.as_deref() == Some(b.id.as_str())
                && t.status == TaskStatus::Running
                && t.attempts == 1
        })
    });
    let said = stdout(&b.cli(&["sleep", "--now"]));
    assert!(said.contains("stop and go back to the swarm"), "{said}");
    let done = a.wait_job(&job.id, "the job ends", |j| j.status.is_final());
    assert_eq!(done.status, JobStatus::Done, "{done:#?}");
    assert_eq!(renderers(&done), BTreeSet::from([a.id.clone()]));
    for t in done.tasks.iter().flatten() {
        assert_eq!(t.failures, 0, "task {} counted a failure", t.index);
    }
    let given_back = done
        .tasks
        .iter()
        .flatten()
        .filter(|t| t.attempts == 2)
        .count();
    assert_eq!(given_back, 1, "one task was started on b, then again on a");

    // A job no node can run says so too.
    let nowhere = submit_sleepy(a, "1", &["--require", "nowhere"]);
    a.wait_job(&nowhere.id, "the job says why it waits", |j| {
        j.waiting.as_deref() == Some("no live node can run it (engine or tags missing)")
    });
}
