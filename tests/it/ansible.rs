//! contrib/ansible: the playbooks pass `--syntax-check` and `ansible-lint`
//! (production profile), and really install and remove a node on localhost,
//! into a temporary prefix, without root and without systemd.
//!
//! The tools come from the venv named by env `ANSIBLE_VENV`, else PATH.
//! When they are missing the test prints a note and passes, except under
//! `CI=true`, where it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::harness::{repo, swarm_bin};

/// An Ansible tool, from `$ANSIBLE_VENV/bin` or PATH.
fn tool(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("ANSIBLE_VENV").map(|v| PathBuf::from(v).join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = venv
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `{name}` is neither in $ANSIBLE_VENV/bin nor on PATH"
        );
        eprintln!("note: {name} not found (set ANSIBLE_VENV); skipping the Ansible test");
    }
    found
}

fn dir() -> PathBuf {
    repo().join("contrib/ansible")
}

/// Run `exe args` in contrib/ansible; its output, or a panic with it.
fn run(exe: &Path, args: &[&str]) -> String {
    let out = Command::new(exe)
        .args(args)
        .current_dir(dir())
        .env("ANSIBLE_NOCOLOR", "1")
        .env_remove("ANSIBLE_CONFIG")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{all}",
        exe.display()
    );
    all
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn playbooks_lint_install_and_remove() {
    let (Some(playbook), Some(lint)) = (tool("ansible-playbook"), tool("ansible-lint")) else {
        return;
    };
    let example = ["-i", "inventory.example.ini", "--syntax-check"];
    run(
        &playbook,
        &[&example[..], &["install.yml", "remove.yml"]].concat(),
    );
    run(&lint, &["--offline", "--profile", "production"]);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let inventory = tmp.path().join("inventory.ini");
    std::fs::write(
        &inventory,
        "[renderswarm]\nlocalhost ansible_connection=local ansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n",
    )
    .unwrap();
    let key_src = tmp.path().join("swarm.key");
    let vars = [
        format!("renderswarm_prefix={}", root.display()),
        format!("renderswarm_binary_src={}", swarm_bin()),
        format!("renderswarm_key_src={}", key_src.display()),
        "renderswarm_become=false".into(),
        "renderswarm_manage_service=false".into(),
        "renderswarm_remove_data=true".into(),
    ];
    let mut args = vec!["-i".to_string(), inventory.display().to_string()];
    for v in &vars {
        args.extend(["-e".into(), v.clone()]);
    }
    let with = |book: &str| -> Vec<String> { [args.clone(), vec![book.into()]].concat() };
    let strs = |v: &[String]| -> String {
        run(&playbook, &v.iter().map(String::as_str).collect::<Vec<_>>())
    };

    strs(&with("install.yml"));
    check_installed(&root, &key_src);
    let again = strs(&with("install.yml"));
    assert!(
        again.contains("changed=0"),
        "a second install changed something:\n{again}"
    );

    strs(&with("remove.yml"));
    for gone in [
        "usr/local/bin/swarm",
        "etc/renderswarm",
        "etc/systemd/system/renderswarm.service",
        "var/lib/renderswarm",
    ] {
        assert!(
            !root.join(gone).exists(),
            "{gone} is still there after remove.yml"
        );
    }
    assert!(key_src.exists(), "the controller keeps its swarm key");
}

fn check_installed(root: &Path, key_src: &Path) {
    let bin = root.join("usr/local/bin/swarm");
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("swarm "));
    let key = root.join("etc/renderswarm/swarm.key");
    assert_eq!(mode(&key), 0o600, "the swarm key must be private");
    assert_eq!(mode(key_src), 0o600);
    assert_eq!(
        std::fs::read(&key).unwrap(),
        std::fs::read(key_src).unwrap()
    );
    let config = root.join("etc/renderswarm/swarm.toml");
    // `alert test` checks the whole config (and reads the key) before it
    // finds no mail settings: reaching that message proves both are sound.
    let checked = Command::new(&bin)
        .args(["alert", "test", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains("no mail settings"),
        "the installed config is rejected: {err}"
    );
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/renderswarm.service")).unwrap();
    let exec = format!(
        "ExecStart=\"{}\" node --config \"{}\"",
        bin.display(),
        config.display()
    );
    assert!(unit.contains(&exec), "{unit}\nlacks {exec}");
}
