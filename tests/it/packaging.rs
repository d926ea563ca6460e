//! What a packager and an admin rely on besides the node itself: `--version`
//! names the commit, completion scripts and man pages come out whole, and the
//! binary needs nothing beyond the C library to run on another machine.
//!
//! Tests that need an outside tool (git, bash, man, ldd) skip with a note when
//! it is missing, and fail under `CI=true`.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::harness::swarm_bin;

/// `name` on PATH; `None` (with a note) when missing outside CI.
pub fn tool_or_skip(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `{name}` is not on PATH"
        );
        eprintln!("note: {name} not on PATH; skipping a test that needs it");
    }
    found
}

fn swarm(args: &[&str]) -> Output {
    let out = Command::new(swarm_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "swarm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn version_names_the_git_commit() {
    let text = stdout(&swarm(&["--version"]));
    let want = format!("swarm {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&want), "{text}");
    if tool_or_skip("git").is_none() {
        return;
    }
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(super::harness::repo())
        .output()
        .unwrap();
    if !head.status.success() {
        eprintln!("note: not a git checkout; the commit is not checked");
        return;
    }
    let commit = stdout(&head).trim().to_string();
    assert!(
        text.contains(&format!("({commit}")),
        "{text} lacks {commit}"
    );
}

#[test]
fn bash_completion_parses_and_registers() {
    let script = stdout(&swarm(&["completions", "bash"]));
    let Some(bash) = tool_or_skip("bash") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("swarm.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new(&bash).arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let sourced = Command::new(&bash)
        .arg("-c")
        .arg(format!("source '{}' && complete -p swarm", file.display()))
        .output()
        .unwrap();
    let registered = stdout(&sourced);
    assert!(
        sourced.status.success() && registered.contains(" swarm"),
        "{registered}"
    );
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let script = stdout(&swarm(&["completions", shell]));
        for sub in ["node", "submit", "service", "completions", "keygen"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
}

#[test]
fn man_pages_are_written_and_render() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let listed = stdout(&swarm(&["man", "--out", dir.to_str().unwrap()]));
    for page in [
        "swarm.1",
        "swarm-node.1",
        "swarm-service-install.1",
        "swarm-alert-test.1",
    ] {
        let path = dir.join(page);
        assert!(path.is_file(), "{page} not written");
        assert!(listed.contains(path.to_str().unwrap()), "{page} not listed");
    }
    let printed = stdout(&swarm(&["man"]));
    assert_eq!(
        printed,
        std::fs::read_to_string(dir.join("swarm.1")).unwrap()
    );
    let Some(man) = tool_or_skip("man") else {
        return;
    };
    for page in ["swarm.1", "swarm-node.1"] {
        let out = Command::new(&man)
            .arg("-l")
            .arg(dir.join(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "man warned");
    }
}

#[test]
fn man_pages_render_without_groff_warnings() {
    let Some(groff) = tool_or_skip("groff") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    swarm(&["man", "--out", tmp.path().to_str().unwrap()]);
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(&groff)
            .args(["-man", "-Tutf8", "-z", "-ww"])
            .arg(&path)
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.is_empty(),
            "{}: {warnings}",
            path.display()
        );
    }
}

/// The libraries a Linux binary may need on any machine with glibc.
const GLIBC_FAMILY: &[&str] = &[
    "linux-vdso",
    "libc.",
    "libm.",
    "libgcc_s.",
    "libpthread.",
    "libdl.",
    "librt.",
    "ld-linux",
];

/// A `swarm` copied to another Linux machine (or installed by `cargo install`)
/// must run there without OpenSSL or any other library that may be missing.
#[cfg(target_os = "linux")]
#[test]
fn binary_links_only_to_the_c_library() {
    let Some(ldd) = tool_or_skip("ldd") else {
        return;
    };
    let out = Command::new(ldd).arg(swarm_bin()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let others: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|lib| lib.rsplit('/').next().unwrap_or(lib).to_string())
        .filter(|lib| !GLIBC_FAMILY.iter().any(|ok| lib.starts_with(ok)))
        .collect();
    assert!(others.is_empty(), "swarm links to {others:?} beyond glibc");
}
