//! `kiln info`: the engine this command would use, in this process or in kilnd.

use anyhow::Result;

use crate::daemon::proto::InfoResponse;
use crate::engine::Engine;

fn print(i: &InfoResponse, daemon: Option<&str>) {
    println!("Version:  {}", i.version);
    match daemon {
        Some(addr) => {
            println!("Daemon:   kilnd pid {} at {addr}", i.pid);
            println!("Builds:   {} running", i.running_builds);
        }
        None => println!("Daemon:   none (the engine runs in this process)"),
    }
    println!("Root:     {}", i.root);
    println!("State:    {}", i.state);
    println!("Worker:   {}", i.worker);
    println!("Runtime:  {}", i.runtime);
    println!(
        "Disk use: {:.1} MiB",
        i.disk_bytes as f64 / (1024.0 * 1024.0)
    );
}

#[derive(clap::Subcommand, Debug)]
pub enum DebugCommand {
    /// The workers that run builds: backend, platforms, runtime.
    Workers,
}

fn workers(i: &InfoResponse) {
    // One worker per engine: the backend it was opened with.
    println!("{:<12} {:<14} {:<10} DETAILS", "ID", "PLATFORMS", "RUNTIME");
    let (id, details) = i.worker.split_once(' ').unwrap_or((i.worker.as_str(), ""));
    println!("{id:<12} {:<14} {:<10} {details}", "linux/amd64", i.runtime);
}

pub async fn debug_local(engine: &Engine, cmd: DebugCommand) -> Result<()> {
    let DebugCommand::Workers = cmd;
    workers(&crate::daemon::service::info(engine, &[], 0).await);
    Ok(())
}

pub async fn debug_remote(addr: &str, cmd: DebugCommand) -> Result<()> {
    let DebugCommand::Workers = cmd;
    workers(&crate::client::info(addr).await?);
    Ok(())
}

pub async fn local(engine: &Engine) -> Result<()> {
    print(&crate::daemon::service::info(engine, &[], 0).await, None);
    Ok(())
}

pub async fn remote(addr: &str) -> Result<()> {
    let i = crate::client::info(addr).await?;
    print(&i, Some(addr));
    Ok(())
}
