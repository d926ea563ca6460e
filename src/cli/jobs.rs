//! `swarm jobs`, `job`, `pause`, `resume`, `cancel`, `retry`, `priority`,
//! `fetch`: looking at jobs and acting on them through the API.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use futures::StreamExt;

use super::{Api, ApiArgs, JobArgs, print_json};
use crate::ledger::TaskStatus;
use crate::node::collected_name;
use crate::node::views::{JobView, TaskView};

pub(crate) fn api(args: &ApiArgs) -> Result<Api> {
    Api::new(&args.api, args.token.clone())
}

fn job_path(job: &str) -> String {
    format!("/jobs/{}", urlencode(job.trim()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn list(args: &ApiArgs, json: bool, archived: bool) -> Result<i32> {
    // The table needs no tasks; JSON gives the whole views, as it always has.
    let path = match (json, archived) {
        (true, false) => "/jobs",
        (true, true) => "/jobs?archived=true",
        (false, false) => "/jobs?tasks=false",
        (false, true) => "/jobs?tasks=false&archived=true",
    };
    let jobs: Vec<JobView> = api(args)?.get(path).await?;
    if json {
        print_json(&jobs)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if jobs.is_empty() {
        writeln!(
            out,
            "no jobs: submit one with `swarm submit SCENE --frames 1-24` (archived ones: `swarm jobs --archived`)"
        )?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<12}  {:<20}  {:<9}  {:>11}  {:<8}  {:>4}  {:>6}",
        "JOB", "NAME", "STATUS", "FRAMES", "ENGINE", "PRIO", "WASTED"
    )?;
    for j in &jobs {
        writeln!(
            out,
            "{:<12}  {:<20}  {:<9}  {:>11}  {:<8}  {:>4}  {:>6}",
            &j.id[..12.min(j.id.len())],
            clip(&j.name, 20),
            if j.archived {
                "archived"
            } else {
                j.status.as_str()
            },
            format!("{}/{}", j.frames_done, j.frames_total),
            clip(&j.engine, 8),
            j.priority,
            j.renders_wasted
        )?;
    }
    Ok(0)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

pub async fn show(args: &JobArgs) -> Result<i32> {
    let job: JobView = api(&args.api)?.get(&job_path(&args.job)).await?;
    if args.json {
        print_json(&job)?;
        return Ok(0);
    }
    print_job(&job)?;
    Ok(0)
}

fn print_job(j: &JobView) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "job      {}", j.id)?;
    writeln!(out, "name     {}", j.name)?;
    let archived = if j.archived { " (archived)" } else { "" };
    writeln!(out, "status   {}{archived}", j.status.as_str())?;
    writeln!(out, "scene    {} ({})", j.scene_file, j.engine)?;
    writeln!(
        out,
        "frames   {} done of {} ({}, {} per task)",
        j.frames_done, j.frames_total, j.frames, j.frames_per_task
    )?;
    writeln!(
        out,
        "renders  {} started, {} wasted",
        j.renders_started, j.renders_wasted
    )?;
    if let Some(eta) = j.eta_secs {
        writeln!(out, "eta      {eta} s")?;
    }
    if let Some(why) = &j.waiting {
        writeln!(out, "waiting  {why}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:>5}  {:<11}  {:<9}  {:<16}  {:>8}  REASON",
        "TASK", "FRAMES", "STATUS", "NODE", "ATTEMPTS"
    )?;
    for t in j.tasks.iter().flatten() {
        writeln!(
            out,
            "{:>5}  {:<11}  {:<9}  {:<16}  {:>8}  {}",
            t.index,
            frames_label(&t.frames),
            status_label(t),
            clip(
                t.node_name.as_deref().or(t.node.as_deref()).unwrap_or("-"),
                16
            ),
            t.attempts,
            t.reason
                .as_deref()
                .and_then(|r| r.lines().next())
                .unwrap_or("")
        )?;
    }
    Ok(())
}

fn status_label(t: &TaskView) -> String {
    match (t.status, t.progress) {
        (TaskStatus::Running, Some(p)) => format!("{:.0}%", p * 100.0),
        (s, _) => format!("{s:?}").to_lowercase(),
    }
}

pub(crate) fn frames_label(frames: &[u32]) -> String {
    match frames {
        [] => "-".into(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first}-{last}"),
    }
}

pub async fn act(args: &JobArgs, action: &str) -> Result<i32> {
    let path = format!("{}/{action}", job_path(&args.job));
    let job: JobView = api(&args.api)?.post(&path, &serde_json::json!({})).await?;
    if args.json {
        print_json(&job)?;
    } else {
        println!(
            "job {} ({}): {action} done; status {}",
            &job.id[..12.min(job.id.len())],
            job.name,
            job.status.as_str()
        );
    }
    Ok(0)
}

pub async fn priority(args: &JobArgs, priority: i32) -> Result<i32> {
    let path = format!("{}/priority", job_path(&args.job));
    let job: JobView = api(&args.api)?
        .post(&path, &serde_json::json!({ "priority": priority }))
        .await?;
    if args.json {
        print_json(&job)?;
    } else {
        println!(
            "job {} ({}): priority {}",
            &job.id[..12.min(job.id.len())],
            job.name,
            job.priority
        );
    }
    Ok(0)
}

pub async fn fetch(args: &JobArgs, out: &Path) -> Result<i32> {
    let api = api(&args.api)?;
    let job: JobView = api.get(&job_path(&args.job)).await?;
    let written = download_frames(&api, &job, out, &mut |_| {}).await?;
    let missing = job.frames_total - written as u64;
    if args.json {
        print_json(
            &serde_json::json!({ "job": job.id, "written": written, "missing": missing, "out": out }),
        )?;
    } else if missing == 0 {
        println!(
            "fetched all {written} frames of {} into {}",
            job.name,
            out.display()
        );
    } else {
        println!(
            "fetched {written} of {} frames of {} into {} ({missing} not rendered yet)",
            job.frames_total,
            job.name,
            out.display()
        );
    }
    Ok(0)
}

/// Download every done frame of `job` into `out` as `frame_0001.ext`,
/// skipping frames already written. Returns how many frames `out` holds.
pub(crate) async fn download_frames(
    api: &Api,
    job: &JobView,
    out: &Path,
    done: &mut dyn FnMut(u32),
) -> Result<usize> {
    tokio::fs::create_dir_all(out)
        .await
        .with_context(|| format!("cannot create {}", out.display()))?;
    let mut count = 0;
    for t in job.tasks.iter().flatten() {
        for (frame, o) in &t.outputs {
            let dest = out.join(collected_name(&job.engine, *frame, &o.ext));
            if !dest.exists() {
                download(api, &format!("{}/frames/{frame}", job_path(&job.id)), &dest).await?;
                done(*frame);
            }
            count += 1;
        }
    }
    Ok(count)
}

async fn download(api: &Api, path: &str, dest: &Path) -> Result<()> {
    let resp = api.get_raw(path).await?;
    let tmp = dest.with_extension("partial");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download broke off")?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
    }
    file.sync_all().await?;
    tokio::fs::rename(&tmp, dest).await?;
    Ok(())
}

pub async fn peers(args: &ApiArgs, json: bool) -> Result<i32> {
    let nodes: Vec<crate::node::views::NodeView> = api(args)?.get("/nodes").await?;
    let others: Vec<_> = nodes.into_iter().filter(|n| !n.me).collect();
    if json {
        print_json(&others)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if others.is_empty() {
        writeln!(out, "no other nodes known yet")?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<16}  {:<10}  {:<9}  {:>5}  {:>11}  {:<20}  LAST SEEN",
        "NAME", "ID", "STATE", "CPU", "MEMORY", "TASK"
    )?;
    for n in &others {
        // A sleeping node may still finish renders: TASK shows them.
        let state = match &n.asleep {
            Some(_) if n.alive => "asleep",
            _ => n.state.as_str(),
        };
        let task = n
            .tasks
            .first()
            .map(|t| {
                format!(
                    "{} {} {:.0}%",
                    clip(&t.job_name, 10),
                    frames_label(&t.frames),
                    t.progress * 100.0
                )
            })
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<16}  {:<10}  {:<9}  {:>4.0}%  {:>5}/{:>5}  {:<20}  {:.1} s ago",
            clip(&n.name, 16),
            &n.id[n.id.len().saturating_sub(10)..],
            state,
            n.cpu,
            gib(n.memory),
            gib(n.memory_total),
            task,
            n.last_seen_ms as f64 / 1000.0
        )?;
    }
    Ok(0)
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}
