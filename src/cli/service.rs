//! `swarm service install|uninstall`: run the node under systemd.
//!
//! The unit is written from this binary's own absolute path, so what the
//! service runs is what the person installing just ran. Nothing is started
//! behind anyone's back: after writing, the `systemctl` commands to run are
//! printed; `--enable` runs them, and says plainly when systemd is absent.
//!
//! A system unit runs as root unless `--run-as USER` names an account (make
//! one with `useradd --system renderswarm`); either way it is hardened:
//! read-only system, private /tmp, no new privileges, writes only to the data
//! directory. Devices stay visible, since GPU rendering needs them.
//!
//! macOS (launchd) and Windows service steps are in docs/service.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::BadInput;

/// The unit's file name.
pub const UNIT_NAME: &str = "renderswarm.service";

/// A system unit's default data directory (systemd's `StateDirectory`).
const SYSTEM_DATA: &str = "/var/lib/renderswarm";

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write a systemd unit that runs `swarm node`, and print how to start it.
    Install(InstallArgs),
    /// Remove the unit written by `install`.
    Uninstall(UninstallArgs),
}

/// User or system unit, and where units go.
#[derive(Args, Debug, Clone)]
pub struct Scope {
    /// A user unit, run while you are logged in (the default).
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// A system unit (/etc/systemd/system), started at boot; needs root.
    #[arg(long)]
    pub system: bool,
    /// Write the unit here instead of systemd's directory.
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// The node's config file (made absolute); default: the node's own lookup.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's data directory (default: the user's data dir; a system unit
    /// uses /var/lib/renderswarm).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A system unit runs as this account instead of root.
    #[arg(long, value_name = "USER", requires = "system")]
    pub run_as: Option<String>,
    /// Print the unit instead of writing it.
    #[arg(long)]
    pub print: bool,
    /// Also run `systemctl daemon-reload` and `systemctl enable --now`.
    #[arg(long, conflicts_with = "print")]
    pub enable: bool,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// First run `systemctl disable --now`, then `daemon-reload` after.
    #[arg(long)]
    pub disable: bool,
}

/// What a unit runs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub exe: PathBuf,
    pub config: Option<PathBuf>,
    pub data: Option<PathBuf>,
    pub system: bool,
    pub run_as: Option<String>,
}

pub fn run(cmd: ServiceCommand) -> Result<i32> {
    match cmd {
        ServiceCommand::Install(args) => install(&args),
        ServiceCommand::Uninstall(args) => uninstall(&args),
    }
}

fn install(args: &InstallArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let unit = Unit {
        exe: exe.canonicalize().unwrap_or(exe),
        config: args.config.as_deref().map(absolute).transpose()?,
        data: args.data.as_deref().map(absolute).transpose()?,
        system: args.scope.system,
        run_as: args.run_as.clone(),
    };
    let text = render(&unit);
    if args.print {
        print!("{text}");
        return Ok(0);
    }
    if unit.exe.components().any(|c| c.as_os_str() == "target") {
        eprintln!(
            "warning: the unit runs {}, a build output that the next `cargo build` replaces; `cargo install --path .` and install from there",
            unit.exe.display()
        );
    }
    if let Some(config) = unit.config.as_deref().filter(|c| !c.exists()) {
        eprintln!(
            "warning: {} does not exist yet; the node will not start without it",
            config.display()
        );
    }
    let path = unit_dir(&args.scope)?.join(UNIT_NAME);
    write_unit(&path, &text)?;
    let ctl = systemctl(args.scope.system);
    if args.enable {
        run_systemctl(args.scope.system, &["daemon-reload"])?;
        run_systemctl(args.scope.system, &["enable", "--now", "renderswarm"])?;
        println!(
            "started; follow its log with: journalctl {}-u renderswarm -f",
            user_flag(args.scope.system)
        );
    } else {
        println!(
            "to start it now and at every boot, run:\n  {ctl} daemon-reload && {ctl} enable --now renderswarm"
        );
    }
    Ok(0)
}

fn uninstall(args: &UninstallArgs) -> Result<i32> {
    let dir = unit_dir(&args.scope)?;
    let path = dir.join(UNIT_NAME);
    if args.disable {
        run_systemctl(args.scope.system, &["disable", "--now", "renderswarm"])?;
    }
    let removed = remove_unit(&dir)?;
    if !removed {
        println!("{} is not installed; nothing to remove", path.display());
        return Ok(0);
    }
    println!("removed {}", path.display());
    let ctl = systemctl(args.scope.system);
    if args.disable {
        run_systemctl(args.scope.system, &["daemon-reload"])?;
    } else {
        println!(
            "if it was running, stop it and forget the unit with:\n  {ctl} stop renderswarm; {ctl} daemon-reload"
        );
    }
    Ok(0)
}

/// The unit file's text.
pub fn render(unit: &Unit) -> String {
    let mut exec = vec![quote(&unit.exe.to_string_lossy()), "node".into()];
    if let Some(c) = &unit.config {
        exec.extend(["--config".into(), quote(&c.to_string_lossy())]);
    }
    let data = unit
        .data
        .clone()
        .or_else(|| unit.system.then(|| PathBuf::from(SYSTEM_DATA)));
    if let Some(d) = &data {
        exec.extend(["--data".into(), quote(&d.to_string_lossy())]);
    }
    let mut s = String::new();
    s += "# Written by `swarm service install`; `swarm service uninstall` removes it.\n";
    s += "[Unit]\nDescription=renderswarm render node\n";
    s += "After=network-online.target\nWants=network-online.target\n\n";
    s += "[Service]\nType=simple\n";
    s += &format!("ExecStart={}\n", exec.join(" "));
    s += "Restart=on-failure\nRestartSec=5\n";
    s += "# SIGTERM makes the node hand back its claims before it exits.\n";
    s += "KillSignal=SIGTERM\nTimeoutStopSec=60\n";
    if unit.system {
        s += &hardening(unit.run_as.as_deref(), unit.data.as_deref());
    }
    let target = if unit.system {
        "multi-user.target"
    } else {
        "default.target"
    };
    s += &format!("\n[Install]\nWantedBy={target}\n");
    s
}

/// A system unit's account and sandbox. The data directory is the one
/// writable place; without `--data` systemd makes /var/lib/renderswarm.
fn hardening(run_as: Option<&str>, data: Option<&Path>) -> String {
    let mut s = String::new();
    if let Some(user) = run_as {
        s += &format!("User={user}\n");
    }
    match data {
        Some(d) => s += &format!("ReadWritePaths={}\n", quote(&d.to_string_lossy())),
        None => s += "StateDirectory=renderswarm\nStateDirectoryMode=0750\n",
    }
    s += "NoNewPrivileges=yes\nPrivateTmp=yes\nProtectSystem=strict\nProtectHome=read-only\n";
    s += "ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\n";
    s += "ProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\n";
    s += "RestrictSUIDSGID=yes\nRestrictRealtime=yes\nRestrictNamespaces=yes\n";
    s += "LockPersonality=yes\nSystemCallArchitectures=native\n";
    s += "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n";
    s += "# Not PrivateDevices: GPU rendering needs /dev/dri and /dev/nvidia*.\n";
    s
}

/// One ExecStart argument: double-quoted, with systemd's specifiers (`%`)
/// and variables (`$`) escaped, so any path passes through unchanged.
pub fn quote(arg: &str) -> String {
    let mut q = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' => q += "\\\"",
            '\\' => q += "\\\\",
            '%' => q += "%%",
            '$' => q += "$$",
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Where the unit goes: `--unit-dir`, else systemd's system or user directory.
fn unit_dir(scope: &Scope) -> Result<PathBuf> {
    if let Some(d) = &scope.unit_dir {
        return Ok(d.clone());
    }
    if scope.system {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    directories::BaseDirs::new()
        .map(|b| b.config_dir().join("systemd").join("user"))
        .ok_or_else(|| {
            BadInput("cannot find your home directory: pass --unit-dir DIR".into()).into()
        })
}

fn write_unit(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        println!("{} is already up to date", path.display());
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| cannot_write(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| cannot_write(path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn cannot_write(path: &Path, e: std::io::Error) -> BadInput {
    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (a system unit needs root: try sudo)"
    } else {
        ""
    };
    BadInput(format!("cannot write {}: {e}{hint}", path.display()))
}

/// Remove the unit and any `*.wants/` link enabling it; whether it was there.
fn remove_unit(dir: &Path) -> Result<bool> {
    for wants in ["default.target.wants", "multi-user.target.wants"] {
        let link = dir.join(wants).join(UNIT_NAME);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).map_err(|e| cannot_write(&link, e))?;
        }
    }
    let path = dir.join(UNIT_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(cannot_write(&path, e).into()),
    }
}

fn user_flag(system: bool) -> &'static str {
    if system { "" } else { "--user " }
}

fn systemctl(system: bool) -> String {
    format!("systemctl {}", user_flag(system))
        .trim_end()
        .to_string()
}

/// Run systemctl, or explain why it cannot be run here.
fn run_systemctl(system: bool, args: &[&str]) -> Result<()> {
    if !Path::new("/run/systemd/system").exists() {
        return Err(BadInput(
            "systemd is not running on this machine: start `swarm node` another way (see docs/service.md), or leave out --enable/--disable".into(),
        )
        .into());
    }
    let mut cmd = Command::new("systemctl");
    if !system {
        cmd.arg("--user");
    }
    let status = cmd
        .args(args)
        .status()
        .map_err(|e| BadInput(format!("cannot run systemctl: {e}")))?;
    if !status.success() {
        anyhow::bail!(
            "`{} {}` failed ({status})",
            systemctl(system),
            args.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(system: bool) -> Unit {
        Unit {
            exe: "/opt/swarm 1/swarm".into(),
            config: Some("/etc/renderswarm/swarm.toml".into()),
            data: None,
            system,
            run_as: None,
        }
    }

    #[test]
    fn quoting_escapes_what_systemd_would_expand() {
        assert_eq!(quote("/a b/c"), "\"/a b/c\"");
        assert_eq!(quote("50%$HOME\"\\"), "\"50%%$$HOME\\\"\\\\\"");
    }

    #[test]
    fn user_unit_runs_the_node_with_its_config() {
        let text = render(&unit(false));
        assert!(text.contains(
            "ExecStart=\"/opt/swarm 1/swarm\" node --config \"/etc/renderswarm/swarm.toml\"\n"
        ));
        assert!(text.contains("Restart=on-failure"));
        assert!(text.contains("WantedBy=default.target"));
        assert!(
            !text.contains("ProtectSystem"),
            "user units are not sandboxed"
        );
    }

    #[test]
    fn system_unit_is_hardened_and_keeps_state_in_var_lib() {
        let text = render(&unit(true));
        assert!(text.contains("--data \"/var/lib/renderswarm\""));
        assert!(text.contains("StateDirectory=renderswarm"));
        assert!(text.contains("ProtectSystem=strict"));
        assert!(text.contains("NoNewPrivileges=yes"));
        assert!(text.contains("WantedBy=multi-user.target"));
        assert!(!text.contains("User="));
        let mut u = unit(true);
        u.data = Some("/srv/render".into());
        u.run_as = Some("renderswarm".into());
        let text = render(&u);
        assert!(text.contains("ReadWritePaths=\"/srv/render\""));
        assert!(text.contains("User=renderswarm\n"));
        assert!(!text.contains("StateDirectory"));
    }
}
