//! `swarm bench` runs end to end at small sizes and reports every figure it
//! promises; what the figures are on a quiet machine is BENCHMARKS.md's job.

use std::process::Command;

use crate::harness::*;

#[test]
fn quick_bench_reports_every_figure_as_json_and_markdown() {
    exclusive();
    let blender = blender_or_skip();
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("BENCHMARKS.md");
    std::fs::write(&md, "# Ours\n\nkept above\n").unwrap();
    let mut cmd = Command::new(swarm_bin());
    cmd.args([
        "bench",
        "--quick",
        "--json",
        "--transfer-mib",
        "16",
        "--write",
    ])
    .arg(&md);
    let lab = lab_or_skip(&["ip", "tc"], "the links benchmark");
    let groups = if blender.is_some() {
        "farm,transfer,links,footprint,blender"
    } else {
        "farm,transfer,links,footprint"
    };
    cmd.args(["--only", groups]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let mut want = vec![
        "1 scheduling efficiency",
        "2 claim latency (median)",
        "3 dispatch throughput",
        "4 wasted renders, no faults",
        "4 wasted renders per killed node",
        "5 failover (median)",
        "6 transfer vs raw stream",
        "6 transfer rate",
        "6 one node to seven, vs one to one",
        "7 dedup: bytes sent for an edited scene",
        "8 idle node memory",
        "8 idle node CPU",
    ];
    if blender.is_some() {
        want.push("9 Blender overhead");
    }
    if lab {
        want.push(LINKS);
    } else {
        // Said, not measured: no figure and no verdict.
        let row = rows.iter().find(|r| r["bench"] == LINKS).unwrap();
        assert!(row["value"].is_null() && row["met"].is_null(), "{row:#?}");
        assert!(row["detail"].as_str().unwrap().starts_with("not run"));
    }
    for name in &want {
        let row = rows
            .iter()
            .find(|r| r["bench"] == *name)
            .unwrap_or_else(|| panic!("no row `{name}` in {rows:#?}"));
        let v = row["value"].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{name}: {v}");
        assert!(row["met"].is_boolean(), "{name} has no verdict");
    }
    let value = |name: &str| {
        rows.iter().find(|r| r["bench"] == name).unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    // Figures that hold on any machine, loaded or not. The scheduling job's
    // claims settle with time to spare, so none of its renders is wasted;
    // the dispatch job's renders take a millisecond, and a rival's claim
    // that takes longer than a settle window to arrive on a loaded machine
    // can cost one (BENCHMARKS.md), so its count is reported, not asserted.
    let detail = |name: &str| {
        rows.iter().find(|r| r["bench"] == name).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let wasted = detail("4 wasted renders, no faults");
    let scheduling = wasted.split("; ").next().unwrap();
    assert!(
        scheduling.starts_with("scheduling job: ") && scheduling.ends_with(", 0 wasted"),
        "{wasted}"
    );
    assert!(value("1 scheduling efficiency") > 0.3);
    assert!(value("7 dedup: bytes sent for an edited scene") < 50.0);
    assert!(value("5 failover (median)") < 30.0);
    if lab {
        let links = detail(LINKS);
        assert!(links.contains("8 MiB to 2 nodes at once"), "{links}");
    }
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.starts_with("# Ours\n\nkept above\n"), "{text}");
    assert!(text.contains("| 1 scheduling efficiency |"), "{text}");
}

const LINKS: &str = "6 one node to seven over shaped links, vs one to one";

#[test]
fn bench_refuses_an_unknown_group() {
    let out = Command::new(swarm_bin())
        .args(["bench", "--only", "farm,warp", "--write", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`warp` is not a benchmark"), "{err}");
}
