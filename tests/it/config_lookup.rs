//! Which swarm.toml `swarm node` reads without --config: the user's
//! (XDG_CONFIG_HOME, else ~/.config), then /etc/renderswarm. Each case uses
//! a config the node rejects (a bad `slots`), so the node stops at once and
//! its error shows which file it read.

use std::path::Path;
use std::process::{Command, Output};

use super::harness::swarm_bin;

/// `swarm node ARGS` with HOME (and XDG_CONFIG_HOME, when given) in `tmp`.
fn node(home: &Path, xdg: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(swarm_bin());
    cmd.arg("node")
        .args(args)
        .env("HOME", home)
        .env("SWARM_LOG", "info")
        .env_remove("SWARM_CONFIG")
        .env_remove("XDG_CONFIG_HOME");
    if let Some(x) = xdg {
        cmd.env("XDG_CONFIG_HOME", x);
    }
    cmd.output().unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn refused(out: &Output, slots: &str, file: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("not {slots}")), "{err}");
    assert!(
        err.contains(&format!("reading config file {}", file.display())),
        "{err}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn user_config_is_found_and_explicit_config_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let xdg = tmp.path().join("xdg");
    let in_home = home.join(".config/renderswarm/swarm.toml");
    write(&in_home, "slots = 300\n");
    refused(&node(&home, None, &[]), "300", &in_home);

    let in_xdg = xdg.join("renderswarm/swarm.toml");
    write(&in_xdg, "slots = 0\n");
    refused(&node(&home, Some(&xdg), &[]), "0", &in_xdg);

    let explicit = tmp.path().join("explicit.toml");
    write(&explicit, "slots = 7777\n");
    let out = node(&home, Some(&xdg), &["--config", explicit.to_str().unwrap()]);
    refused(&out, "7777", &explicit);
}

#[test]
fn a_missing_explicit_config_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.toml");
    let out = node(tmp.path(), None, &["--config", missing.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn without_any_config_file_none_is_read() {
    if Path::new("/etc/renderswarm/swarm.toml").exists() {
        eprintln!("note: this machine has /etc/renderswarm/swarm.toml; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = node(tmp.path(), None, &["--slots", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("reading config file"), "{err}");
}
