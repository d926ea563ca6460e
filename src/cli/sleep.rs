//! `swarm sleep` and `swarm wake`: the node behind `--api` takes no new
//! tasks, or takes them again (see `node::sleep`). A workstation's owner
//! runs them on their own machine; the page has the same button.

use anyhow::Result;

use super::{ApiArgs, jobs::api, print_json};
use crate::node::views::NodeView;

pub async fn sleep(args: &ApiArgs, now: bool, json: bool) -> Result<i32> {
    let path = if now {
        "/node/sleep?now=true"
    } else {
        "/node/sleep"
    };
    let node: NodeView = api(args)?.post(path, &serde_json::json!({})).await?;
    if json {
        print_json(&node)?;
        return Ok(0);
    }
    let why = node.asleep.as_deref().unwrap_or("by hand");
    println!("node {} is asleep {why}: it takes no new tasks", node.name);
    let renders = node.tasks.len();
    if now && renders > 0 {
        println!("its {renders} render(s) under way stop and go back to the swarm");
    } else if renders > 0 {
        println!("its {renders} render(s) under way finish first (`swarm sleep --now` stops them)");
    }
    println!("`swarm wake` wakes it");
    Ok(0)
}

pub async fn wake(args: &ApiArgs, json: bool) -> Result<i32> {
    let node: NodeView = api(args)?
        .post("/node/wake", &serde_json::json!({}))
        .await?;
    if json {
        print_json(&node)?;
        return Ok(0);
    }
    println!("node {} is awake: it takes tasks", node.name);
    Ok(0)
}
