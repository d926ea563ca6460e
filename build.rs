//! Build script: stamp the git commit into the binary for `swarm --version`.
//!
//! The commit comes from `git rev-parse` when this crate is its own git
//! checkout, else from env `RENDERSWARM_GIT_COMMIT` (packagers set it), else
//! it is `unknown`. The build never fails for lack of git: a crates tarball
//! has no `.git`, and a tarball unpacked inside some other repository must not
//! claim that repository's commit, so the work tree's top must be this crate.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RENDERSWARM_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git_commit(&dir)
        .or_else(|| std::env::var("RENDERSWARM_GIT_COMMIT").ok())
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SWARM_GIT_COMMIT={}", commit.trim());
}

/// The short commit of the checkout at `dir`, watching the files that move
/// when it changes.
fn git_commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if !same_dir(Path::new(&top), dir) {
        return None;
    }
    watch_head(dir);
    git(dir, &["rev-parse", "--short=12", "HEAD"])
}

/// Rerun when HEAD moves: HEAD itself (a checkout), the branch it points to
/// (a commit), packed refs, and this work tree's HEAD log (every commit,
/// checkout and reset appends to it). In a worktree `.git` is a file, so the
/// paths come from git. Only existing paths are named: cargo would rerun on
/// every build for a missing one.
fn watch_head(dir: &Path) {
    let mut paths = vec!["HEAD".to_string(), "packed-refs".into(), "logs/HEAD".into()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        paths.push(branch);
    }
    for p in paths {
        if let Some(path) = git_path(dir, &p).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Where git keeps `name`; git before 2.31 lacks `--path-format` and
/// answers relative to `dir`.
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    git(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-path", name],
    )
    .or_else(|| git(dir, &["rev-parse", "--git-path", name]))
    .map(|p| dir.join(p))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Run git in `dir`; its trimmed stdout when it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
