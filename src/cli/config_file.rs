//! Which config file `swarm node` reads.
//!
//! An explicit `--config FILE` (or env `SWARM_CONFIG`) wins and must exist:
//! a typo there is an error, never a silent fall back to defaults. Without
//! one, the first existing of the user's file (`~/.config/renderswarm/swarm.toml`
//! on Linux, the platform's config dir elsewhere) and the machine's
//! (`/etc/renderswarm/swarm.toml`) is read, so a studio can configure every
//! machine once and a person can still override it for themselves. The file
//! read is logged, since a setting from an unexpected file is hard to find.
//!
//! `contrib/swarm.toml` documents every key; the tests below fail when
//! `FileConfig` gains a key that file does not mention.

use std::path::{Path, PathBuf};

/// The file name looked for in each config directory.
pub const FILE_NAME: &str = "swarm.toml";

/// The machine-wide config directory.
pub const SYSTEM_DIR: &str = "/etc/renderswarm";

/// The config file to read: the explicit one, else the first that exists of
/// [`candidates`]; `None` means defaults and flags only.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    let found = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => first_existing(&candidates()),
    };
    match &found {
        Some(p) => tracing::info!("reading config file {}", p.display()),
        None => tracing::debug!(
            "no config file: looked for {}",
            candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    }
    found
}

/// Where a config file is looked for, in order: the user's, then the machine's.
pub fn candidates() -> Vec<PathBuf> {
    let user = directories::ProjectDirs::from("", "", "renderswarm")
        .map(|d| d.config_dir().join(FILE_NAME));
    user.into_iter()
        .chain([Path::new(SYSTEM_DIR).join(FILE_NAME)])
        .collect()
}

fn first_existing(paths: &[PathBuf]) -> Option<PathBuf> {
    paths.iter().find(|p| p.is_file()).cloned()
}

#[cfg(test)]
mod tests {
    use super::super::node::FileConfig;
    use super::*;

    const CONTRIB: &str = include_str!("../../contrib/swarm.toml");

    #[test]
    fn user_file_comes_before_the_machine_file() {
        let c = candidates();
        assert_eq!(c.last().unwrap(), &Path::new("/etc/renderswarm/swarm.toml"));
        assert!(
            c.len() == 2 && c[0].ends_with("renderswarm/swarm.toml"),
            "{c:?}"
        );
    }

    #[test]
    fn the_first_existing_file_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|n| tmp.path().join(n));
        std::fs::write(&b, "").unwrap();
        std::fs::write(&c, "").unwrap();
        assert_eq!(first_existing(&[a.clone(), b.clone(), c.clone()]), Some(b));
        assert_eq!(first_existing(std::slice::from_ref(&a)), None);
        // A directory of that name is not a config file.
        assert_eq!(first_existing(&[tmp.path().to_path_buf()]), None);
    }

    #[test]
    fn an_explicit_file_is_used_even_when_missing() {
        let missing = Path::new("/nonexistent/swarm.toml");
        assert_eq!(locate(Some(missing)).as_deref(), Some(missing));
    }

    #[test]
    fn contrib_example_parses() {
        let cfg: FileConfig = toml::from_str(CONTRIB).expect("contrib/swarm.toml parses");
        assert_eq!(
            cfg.web.as_deref(),
            Some("127.0.0.1:7878"),
            "the example shows the defaults"
        );
        assert_eq!(cfg.slots, None, "slots is left to slots_per_gpu's rule");
    }

    /// The example with every commented-out setting (`#key = ...`, no space
    /// after `#`) switched on must parse too.
    #[test]
    fn contrib_example_parses_with_every_setting_on() {
        let on = uncomment(CONTRIB);
        let cfg: FileConfig = toml::from_str(&on).unwrap_or_else(|e| panic!("{e}\n{on}"));
        assert!(cfg.web_token.is_some() && !cfg.engine_commands.is_empty());
    }

    #[test]
    fn contrib_example_mentions_every_key() {
        let on = uncomment(CONTRIB);
        let mentioned: toml::Table = toml::from_str(&on).unwrap();
        let missing: Vec<String> = all_keys()
            .into_iter()
            .filter(|k| !mentioned.contains_key(k))
            .collect();
        assert!(
            missing.is_empty(),
            "contrib/swarm.toml does not document {missing:?}: add each with a comment and its default"
        );
    }

    /// Every key of `FileConfig`: a struct literal with every field set (no
    /// `..Default::default()`), so a new field breaks this until it is added
    /// here, and then the test above until contrib/swarm.toml shows it.
    fn all_keys() -> Vec<String> {
        let full = FileConfig {
            data: Some("d".into()),
            web: Some("w".into()),
            web_token: Some("t".into()),
            slots: Some(1),
            slots_per_gpu: Some(1),
            blender: Some("b".into()),
            ffmpeg: Some("f".into()),
            engine_commands: [("e".to_string(), "c".to_string())].into(),
            name: Some("n".into()),
            tags: vec!["t".into()],
            stall: Some(1),
            render_nice: Some(10),
            cache_size: Some("1G".into()),
            archive_after_days: Some(30),
            sleep_schedule: Some("s".into()),
            threads: Some(1),
            listen: vec!["l".into()],
            peers: vec!["p".into()],
            mdns: Some(true),
            swarm_key: Some("k".into()),
            smtp: Some("s".into()),
            smtp_password_file: Some("f".into()),
            alert_to: vec!["a".into()],
            alert_from: Some("a".into()),
            alert_level: Some("l".into()),
            alert_kinds: vec!["k".into()],
            alert_batch: Some(1),
            alert_max_per_hour: Some(1),
            alert_webhook: Some("w".into()),
            page_url: Some("p".into()),
        };
        let table = toml::Table::try_from(&full).unwrap();
        table.keys().cloned().collect()
    }

    fn uncomment(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with([' ', '#']) && !rest.is_empty() => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
