//! Partitions across real hosts: every node runs in its own network
//! namespace, the namespaces are joined by bridges in a "switch"
//! namespace, and a partition is a link set down, as a pulled cable would
//! be. Nothing in the node knows it is being tested: discovery is mDNS
//! across the bridge, and the cut closes no connection by itself (the
//! nodes' ping watchdog has to notice).
//!
//! ```text
//!   host0 ─┐            ┌─ host2
//!          br0 ─trunk─ br1
//!   host1 ─┘            └─ host3        (all in namespace <prefix>sw)
//! ```
//!
//! Each host also has a point-to-point management link to the test's own
//! namespace, on which its API listens (with a web token, as any node's
//! API beyond loopback must). The management links carry no swarm
//! traffic: nodes listen for peers on their data address only.
//!
//! Needs root (CI runs as root) and `ip` from iproute2; under `CI=true` a
//! missing one fails the test instead of skipping it.

use std::time::{Duration, Instant};

use crate::harness::*;
use renderswarm::netlab::{Addressing, Host, Lab};
use renderswarm::node::views::JobView;

const TOKEN: &str = "netns-test-token";

/// Two bridges joined by a trunk (`trunk1`), hosts on bridge `sides[i]`
/// each.
fn build_lab(sides: &[usize]) -> Lab {
    let at = Addressing {
        tag: "rs",
        data: 213,
        mgmt: 214,
    };
    let mut lab = Lab::new(at, 2).expect("build the lab's switch");
    for side in sides {
        lab.add_host(*side, None).expect("add a host to the lab");
    }
    lab
}

/// Pull (`up` false) or plug back a cable of the lab's switch.
fn set_link(lab: &Lab, link: &str, up: bool) {
    lab.set_link(link, up).expect("set a link of the lab");
}

/// Start a node inside `host`'s namespace, finding its peers by mDNS only.
fn start_on(host: &Host, data: &std::path::Path, replay: &std::path::Path) -> NodeProc {
    let how = Launch {
        wrapper: ["ip", "netns", "exec", host.ns.as_str()]
            .map(String::from)
            .to_vec(),
        web: Some(format!("{}:0", host.api_ip)),
        token: Some(TOKEN.to_string()),
    };
    let listen = format!("/ip4/{}/tcp/7879", host.data_ip);
    let engine = sleepy("0.3");
    NodeProc::launch(
        data,
        &[
            "--listen",
            &listen,
            "--mdns-interval",
            "1",
            "--slots",
            "1",
            "--engine-command",
            &engine,
            "--test-replay-file",
            replay.to_str().unwrap(),
        ],
        &how,
    )
}

/// A Prometheus counter with `effect` label `effect` from a node's `/metrics`.
fn deltas(node: &NodeProc, effect: &str) -> u64 {
    let label = format!("effect=\"{effect}\"");
    metric_where(node, "renderswarm_gossip_deltas_total", &label) as u64
}

fn alive(node: &NodeProc) -> usize {
    node.nodes().iter().filter(|v| v.alive).count()
}

/// Wait until every node in `group` sees exactly `n` live nodes; on
/// failure, say what each node of `all` sees and how its links went.
fn wait_sees(group: &[&NodeProc], all: &[&NodeProc], n: usize, what: &str) {
    for node in group {
        if wait_for(what, || (alive(node) == n).then_some(())).is_none() {
            panic!("{what}: not seen within the deadline\n{}", views(all));
        }
    }
}

/// Wait until each node in `group` has seen `more` frames done beyond what
/// it saw at the call.
fn wait_progress(group: &[&NodeProc], job: &str, more: u64, what: &str) {
    let before: Vec<u64> = group.iter().map(|n| n.job(job).frames_done).collect();
    for (node, b) in group.iter().zip(before) {
        node.wait_job(job, what, |j| j.frames_done >= b + more);
    }
}

/// Fetch `job`'s frames from `node` and check each is the frame it names.
fn assert_frames(node: &NodeProc, job: &str, frames: u32) {
    let out = tempfile::tempdir().unwrap();
    let got = node.cli(&["fetch", job, "--out", out.path().to_str().unwrap()]);
    assert!(
        got.status.success(),
        "swarm fetch: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    for f in 1..=frames {
        let path = out.path().join(format!("frame_{f:04}.txt"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text.trim(), format!("frame {f}"), "{}", path.display());
    }
}

/// What a job's tasks are, for comparing before and after a replay.
fn task_states(view: &JobView) -> Vec<String> {
    view.tasks
        .iter()
        .flatten()
        .map(|t| format!("{:?} {:?} {}", t.status, t.node, t.attempts))
        .collect()
}

#[test]
fn partitions_across_network_namespaces_heal_and_replays_change_nothing() {
    if !lab_or_skip(&["ip"], "the network-namespace test") {
        return;
    }
    let lab = build_lab(&[0, 0, 1, 1]);
    let tmp = tempfile::tempdir().unwrap();
    let replay: Vec<_> = (0..4)
        .map(|i| tmp.path().join(format!("replay{i}")))
        .collect();
    let t0 = Instant::now();
    let nodes: Vec<NodeProc> = lab
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| start_on(h, &tmp.path().join(format!("data{i}")), &replay[i]))
        .collect();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_sees(&all, &all, 4, "every host finds the others by mDNS");
    println!(
        "netns: 4 hosts in 4 namespaces found each other by mDNS in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // A partition between the bridges while both halves render.
    let orbit = example("orbit.toml");
    let job = nodes[0].submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-60",
        "--engine",
        "sleepy",
    ]);
    wait_every_node_rendered(&nodes, &job.id);
    set_link(&lab, "trunk1", false);
    let cut = Instant::now();
    wait_sees(&all, &all, 2, "each half sees only itself");
    println!(
        "netns: trunk cut; each half saw the other gone after {:.1} s",
        cut.elapsed().as_secs_f64()
    );
    wait_progress(&all, &job.id, 4, "both halves render during the cut");
    set_link(&lab, "trunk1", true);
    let healed = Instant::now();
    wait_done_and_converged(&nodes, &job.id);
    let done = nodes[3].job(&job.id);
    println!(
        "netns: healed; 60 frames done and ledgers converged {:.1} s after the heal; renders started {}, wasted {}",
        healed.elapsed().as_secs_f64(),
        done.renders_started,
        done.renders_wasted
    );
    assert_eq!(done.frames_done, 60);
    assert_frames(&nodes[3], &job.id, 60);

    // One host's cable pulled for longer than gossipsub's 60 s duplicate
    // cache, while it and the others render.
    let long = nodes[0].submit(&[
        orbit.to_str().unwrap(),
        "--frames",
        "1-200",
        "--engine",
        "sleepy",
    ]);
    nodes[3].wait_job(&long.id, "host3 has the job", |j| j.frames_done >= 1);
    set_link(&lab, &lab.hosts[3].cable, false);
    let cut = Instant::now();
    wait_sees(&[&nodes[3]], &all, 1, "host3 is alone");
    wait_sees(&all[..3], &all, 3, "the others lose host3");
    wait_progress(&all, &long.id, 3, "both sides render during the long cut");
    let cache = Duration::from_secs(65);
    std::thread::sleep(cache.saturating_sub(cut.elapsed()));
    set_link(&lab, &lab.hosts[3].cable, true);
    let healed = Instant::now();
    wait_sees(&all, &all, 4, "host3 is back");
    wait_done_and_converged(&nodes, &long.id);
    let done = nodes[0].job(&long.id);
    println!(
        "netns: host3 cut for {:.0} s; after the heal 200 frames done and converged in {:.1} s; renders started {}, wasted {}",
        (healed - cut).as_secs_f64(),
        healed.elapsed().as_secs_f64(),
        done.renders_started,
        done.renders_wasted
    );
    assert_eq!(done.frames_done, 200);
    assert_frames(&nodes[0], &long.id, 200);

    // Every node publishes its whole gossip history again, messages over a
    // minute old among them: the ledgers must not change.
    let before: Vec<(Vec<String>, Vec<String>)> = nodes
        .iter()
        .map(|n| (task_states(&n.job(&job.id)), task_states(&n.job(&long.id))))
        .collect();
    let unchanged: Vec<u64> = nodes.iter().map(|n| deltas(n, "unchanged")).collect();
    let changed: Vec<u64> = nodes.iter().map(|n| deltas(n, "changed")).collect();
    for f in &replay {
        std::fs::write(f, "replay").unwrap();
    }
    let sent: Vec<u64> = replay
        .iter()
        .map(|f| {
            let done = f.with_extension("done");
            wait_for("the replay is published", || {
                std::fs::read_to_string(&done).ok()?.trim().parse().ok()
            })
            .expect("replay published")
        })
        .collect();
    let total: u64 = sent.iter().sum();
    assert!(total > 0, "nothing was replayed");
    for (i, n) in nodes.iter().enumerate() {
        // Each node hears the others' replays (a few may be dropped as
        // gossip is best effort; sync repairs what gossip loses).
        let want = (total - sent[i]) * 9 / 10;
        wait_for("the replays arrive", || {
            (deltas(n, "unchanged") - unchanged[i] >= want).then_some(())
        })
        .unwrap_or_else(|| panic!("node {i} heard fewer than {want} replayed deltas"));
    }
    for (i, n) in nodes.iter().enumerate() {
        let after = (task_states(&n.job(&job.id)), task_states(&n.job(&long.id)));
        assert_eq!(after, before[i], "node {i}'s jobs changed after the replay");
    }
    wait_done_and_converged(&nodes, &long.id);
    let heard: Vec<u64> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| deltas(n, "unchanged") - unchanged[i])
        .collect();
    let newly_changed: Vec<u64> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| deltas(n, "changed") - changed[i])
        .collect();
    println!(
        "netns: replayed {total} ledger messages (per node {sent:?}); heard as unchanged {heard:?}, changed {newly_changed:?}; ledgers unchanged"
    );
    drop(nodes);
    drop(lab);
}
