//! `swarm demo`: the README's first command.
//!
//! What belongs here: the demo as a newcomer runs it.

use crate::harness::*;

#[test]
fn demo_renders_the_example_on_a_local_swarm() {
    exclusive();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("frames");
    let res = std::process::Command::new(swarm_bin())
        .args(["demo", "--nodes", "2", "--frames", "1-6", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for f in 1..=6 {
        let (w, h, _) = decode_png(&dir.join(format!("frame_{f:04}.png")));
        assert_eq!((w, h), (320, 180));
    }
    assert!(
        stdout.contains("demo-1") && stdout.contains("demo-2"),
        "who rendered what: {stdout}"
    );
    assert!(stdout.contains("wasted 0"), "{stdout}");
}
