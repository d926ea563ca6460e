//! A room of hosts on one machine: network namespaces cabled to bridges.
//!
//! A swarm's behaviour on a real network (mDNS across a switch, a pulled
//! cable, a submitter's link that is the limit) cannot be seen on
//! loopback. A lab builds that room with iproute2: a "switch" namespace
//! holding the bridges, and per host a namespace with one cable (a veth
//! pair, its switch end plugged into a bridge, optionally shaped to a rate
//! both ways by `tc ... tbf`) and a management link to the namespace that
//! built the lab, on which the host's API can listen without sharing the
//! swarm's cable. Dropping the lab deletes its namespaces, and with them
//! every link it made.
//!
//! Used by the partition test and the `links` benchmark; it needs root and
//! iproute2, which [`unavailable`] checks first.

use std::process::Command;

/// A command that builds or changes a lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("could not run `{tool}`: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
}

/// Why a lab cannot be built here, if it cannot: not root, or one of
/// `tools` (`ip`, `tc`) missing.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("building network namespaces needs root".into());
    }
    tools
        .iter()
        .find(|tool| {
            !Command::new(tool)
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|tool| format!("`{tool}` (iproute2) is not installed"))
}

/// Where a lab's addresses come from, so that two labs can stand at once.
#[derive(Debug, Clone, Copy)]
pub struct Addressing {
    /// Namespace names start with this and the builder's process id.
    pub tag: &'static str,
    /// Hosts' cables get `10.<data>.0.<10 + i>/24`.
    pub data: u8,
    /// Host `i`'s management link is `10.<mgmt>.<i>.0/30`: `.1` on the
    /// builder's side, `.2` in the host.
    pub mgmt: u8,
}

/// The switch and its hosts, removed when dropped.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    at: Addressing,
    pub hosts: Vec<Host>,
}

#[derive(Debug)]
pub struct Host {
    /// Its network namespace.
    pub ns: String,
    /// Where it listens for peers (on its cable).
    pub data_ip: String,
    /// Where its API listens (on its management link).
    pub api_ip: String,
    /// Its cable's end in the switch, plugged into a bridge.
    pub cable: String,
}

impl Lab {
    /// A switch with `bridges` bridges (`br0`, `br1`, …), each joined to
    /// the one before by a trunk (`trunk<i>` on bridge i-1's side,
    /// `trunk<i>b` on bridge i's), and no hosts yet.
    pub fn new(at: Addressing, bridges: usize) -> Result<Lab, LabError> {
        let lab = Lab {
            prefix: format!("{}{}", at.tag, std::process::id() % 100_000),
            at,
            hosts: Vec::new(),
        };
        let sw = lab.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        for b in 0..bridges {
            // Snooping off: multicast (mDNS) is flooded to every port.
            let br = format!("br{b}");
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                &br,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])?;
            ip(&["-n", &sw, "link", "set", &br, "up"])?;
            if b > 0 {
                let (near, far) = (format!("trunk{b}"), format!("trunk{b}b"));
                ip(&[
                    "-n", &sw, "link", "add", &near, "type", "veth", "peer", "name", &far,
                ])?;
                let before = format!("br{}", b - 1);
                ip(&["-n", &sw, "link", "set", &near, "master", &before, "up"])?;
                ip(&["-n", &sw, "link", "set", &far, "master", &br, "up"])?;
            }
        }
        Ok(lab)
    }

    /// The namespace holding the bridges.
    pub fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// A host cabled to bridge `bridge`; with `mbit`, what crosses its
    /// cable is limited to that many Mbit/s each way.
    pub fn add_host(&mut self, bridge: usize, mbit: Option<u32>) -> Result<&Host, LabError> {
        let i = self.hosts.len();
        let sw = self.switch();
        let host = Host {
            ns: format!("{}n{i}", self.prefix),
            data_ip: format!("10.{}.0.{}", self.at.data, 10 + i),
            api_ip: format!("10.{}.{i}.2", self.at.mgmt),
            cable: format!("c{i}"),
        };
        let ns = host.ns.clone();
        // Pushed before its links are made, so that a failure below still
        // removes its namespace.
        self.hosts.push(host);
        let host = &self.hosts[i];
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            &host.cable,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ])?;
        let br = format!("br{bridge}");
        ip(&["-n", &sw, "link", "set", &host.cable, "master", &br, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", host.data_ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        // mDNS sends to 224.0.0.251: multicast leaves by the cable.
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"])?;
        if let Some(mbit) = mbit {
            // Upload: what leaves the host; download: what the switch
            // sends it.
            shape(&ns, "eth0", mbit)?;
            shape(&sw, &host.cable, mbit)?;
        }
        self.add_management_link(i)?;
        Ok(&self.hosts[i])
    }

    /// Host `i`'s point-to-point link to the namespace that built the lab.
    fn add_management_link(&self, i: usize) -> Result<(), LabError> {
        let host = &self.hosts[i];
        let mgmt = format!("{}m{i}", self.prefix);
        ip(&[
            "link", "add", &mgmt, "type", "veth", "peer", "name", "mg0", "netns", &host.ns,
        ])?;
        let near = format!("10.{}.{i}.1/30", self.at.mgmt);
        ip(&["addr", "add", &near, "dev", &mgmt])?;
        ip(&["link", "set", &mgmt, "up"])?;
        let far = format!("{}/30", host.api_ip);
        ip(&["-n", &host.ns, "addr", "add", &far, "dev", "mg0"])?;
        ip(&["-n", &host.ns, "link", "set", "mg0", "up"])
    }

    /// Set a link in the switch (a host's cable, a trunk) down (`up`
    /// false), as a pulled cable would be, or up again.
    pub fn set_link(&self, link: &str, up: bool) -> Result<(), LabError> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.switch(), "link", "set", link, state])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and so their peers.
        let names = self.hosts.iter().map(|h| h.ns.clone());
        for ns in names.chain([self.switch()]) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Limit what leaves `dev` in namespace `ns` to `mbit` Mbit/s.
fn shape(ns: &str, dev: &str, mbit: u32) -> Result<(), LabError> {
    let rate = format!("{mbit}mbit");
    run(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "128kb",
            "latency", "50ms",
        ],
    )
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    run("ip", args)
}

/// Run `tool ARGS`, failing with what it printed.
fn run(tool: &str, args: &[&str]) -> Result<(), LabError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            tool: tool.into(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(LabError::Failed {
        command: format!("{tool} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
    })
}
