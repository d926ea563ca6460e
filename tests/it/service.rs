//! `swarm service`: the systemd unit it writes, prints and removes. Nothing
//! here talks to systemd; `systemd-analyze verify` checks the unit when that
//! tool is installed.

use std::path::Path;
use std::process::{Command, Output};

use super::harness::swarm_bin;

fn service(args: &[&str]) -> Output {
    Command::new(swarm_bin())
        .arg("service")
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// `systemd-analyze verify` the unit, when the tool is there: never required.
fn verify(unit: &Path) {
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
    else {
        eprintln!("note: no systemd-analyze; the unit is not verified");
        return;
    };
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        text(&out.stderr)
    );
}

#[test]
fn install_writes_a_user_unit_and_uninstall_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let units = tmp.path().join("units");
    let config = tmp.path().join("my config.toml");
    std::fs::write(&config, "slots = 1\n").unwrap();
    let dir = units.to_str().unwrap();
    let said = ok(service(&[
        "install",
        "--unit-dir",
        dir,
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(
        said.contains(
            "systemctl --user daemon-reload && systemctl --user enable --now renderswarm"
        ),
        "{said}"
    );
    let unit = units.join("renderswarm.service");
    let content = std::fs::read_to_string(&unit).unwrap();
    let exe = Path::new(swarm_bin()).canonicalize().unwrap();
    let exec = format!(
        "ExecStart=\"{}\" node --config \"{}\"\n",
        exe.display(),
        config.display()
    );
    assert!(content.contains(&exec), "{content}\nlacks {exec}");
    assert!(content.contains("Restart=on-failure") && content.contains("WantedBy=default.target"));
    verify(&unit);

    let again = ok(service(&[
        "install",
        "--unit-dir",
        dir,
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(again.contains("already up to date"), "{again}");

    // An enabled unit's link goes with it.
    let wants = units.join("default.target.wants");
    std::fs::create_dir(&wants).unwrap();
    std::os::unix::fs::symlink(&unit, wants.join("renderswarm.service")).unwrap();
    let said = ok(service(&["uninstall", "--unit-dir", dir]));
    assert!(said.contains("removed"), "{said}");
    assert!(!unit.exists());
    assert!(
        wants
            .join("renderswarm.service")
            .symlink_metadata()
            .is_err()
    );
    let said = ok(service(&["uninstall", "--unit-dir", dir]));
    assert!(said.contains("not installed"), "{said}");
}

#[test]
fn system_unit_is_printed_hardened_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let args = [
        "install",
        "--system",
        "--print",
        "--data",
        data.to_str().unwrap(),
    ];
    let unit = ok(service(&args));
    for line in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "WantedBy=multi-user.target",
        &format!("ReadWritePaths=\"{}\"", data.display()),
        &format!("--data \"{}\"", data.display()),
    ] {
        assert!(unit.contains(line), "{unit}\nlacks {line}");
    }
    let file = tmp.path().join("renderswarm.service");
    std::fs::write(&file, &unit).unwrap();
    verify(&file);
    let default = ok(service(&[
        "install", "--system", "--print", "--run-as", "render",
    ]));
    assert!(default.contains("StateDirectory=renderswarm") && default.contains("User=render\n"));
    assert!(default.contains("--data \"/var/lib/renderswarm\""));
}

#[test]
fn enable_without_systemd_says_so() {
    if Path::new("/run/systemd/system").exists() {
        eprintln!("note: systemd runs here; not trying --enable");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = service(&[
        "install",
        "--enable",
        "--unit-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("systemd is not running"),
        "{}",
        text(&out.stderr)
    );
}
