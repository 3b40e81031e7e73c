//! `kiln prune` and `kiln du`: the build cache, as `docker buildx prune` / `buildx du` show
//! and remove it.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use std::io::{BufRead, Write};

use crate::daemon::contexts::ContextStore;
use crate::daemon::proto::PruneRequest;
use crate::engine::Engine;
use crate::gc::{self, parse_filters, Filter, PrunePolicy, PruneReport, Stores, UsageRecord};
use crate::units::{human_duration, human_size, parse_size};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Also remove what tagged images share (never what they need).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Amount of disk space to keep for cache, the most recently used first (e.g. 10GB).
    #[arg(long = "keep-storage", visible_alias = "reserved-space")]
    pub keep_storage: Option<String>,
    /// Filter: until=DURATION (keep what was used within it), type=, id=, description~=, …;
    /// repeatable.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Show every removed record in full.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct DuArgs {
    /// Show every record in full.
    #[arg(long)]
    pub verbose: bool,
    /// Filter: type=, id=, description~=, shared, inuse, …; repeatable.
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

fn confirm(all: bool) -> Result<bool> {
    let what = if all {
        "all build cache"
    } else {
        "all dangling build cache"
    };
    print!("WARNING! This will remove {what}. Are you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The prune `args` ask for (checked before anything is asked or sent).
fn policy(args: &PruneArgs) -> Result<PrunePolicy> {
    let (filters, keep_duration) = parse_filters(&args.filters)?;
    let keep_storage = match &args.keep_storage {
        Some(s) => parse_size(s).map_err(|e| anyhow!(e))?,
        None => 0,
    };
    Ok(PrunePolicy {
        all: args.all,
        keep_storage,
        keep_duration,
        filters,
    })
}

/// kilnd's kept build contexts under the engine's root (cache too, when no kilnd runs).
fn contexts(engine: &Engine) -> ContextStore {
    ContextStore::at(&engine.opts.root.join("contexts"))
}

pub async fn prune(engine: std::sync::Arc<Engine>, args: PruneArgs) -> Result<()> {
    let policy = policy(&args)?;
    if !args.force && !confirm(args.all)? {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        let contexts = contexts(&engine);
        gc::prune(&Stores::of(&engine).with_contexts(&contexts), &policy)
    })
    .await??;
    tracing::debug!(
        removed = report.removed.len(),
        freed = report.freed,
        secs = started.elapsed().as_secs_f64(),
        "pruned"
    );
    show_prune(&args, &report)
}

/// `kiln prune` through kilnd: the same checks, question and report.
pub async fn prune_remote(addr: &str, args: PruneArgs) -> Result<()> {
    let policy = policy(&args)?;
    if !args.force && !confirm(args.all)? {
        return Ok(());
    }
    let req = PruneRequest {
        all: args.all,
        keep_storage: policy.keep_storage,
        filters: args.filters.clone(),
    };
    let report = crate::client::usage::prune(addr, req).await?;
    show_prune(&args, &report)
}

fn show_prune(args: &PruneArgs, report: &PruneReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.verbose {
        for r in &report.removed {
            write_verbose(&mut out, r)?;
        }
    } else if !report.removed.is_empty() {
        write_table(&mut out, &report.removed)?;
    }
    writeln!(out, "Total:\t{}", human_size(report.freed))?;
    Ok(())
}

fn du_filters(args: &DuArgs) -> Result<Vec<Filter>> {
    let (filters, until) = parse_filters(&args.filters)?;
    if until.is_some() {
        bail!("the until filter is for prune");
    }
    Ok(filters)
}

pub async fn du(engine: std::sync::Arc<Engine>, args: DuArgs) -> Result<()> {
    let filters = du_filters(&args)?;
    let records = tokio::task::spawn_blocking(move || {
        let contexts = contexts(&engine);
        gc::disk_usage(&Stores::of(&engine).with_contexts(&contexts), &filters)
    })
    .await??;
    show_du(&args, &records)
}

/// `kiln du` through kilnd.
pub async fn du_remote(addr: &str, args: DuArgs) -> Result<()> {
    du_filters(&args)?;
    let records = crate::client::usage::disk_usage(addr, args.filters.clone()).await?;
    show_du(&args, &records)
}

fn show_du(args: &DuArgs, records: &[UsageRecord]) -> Result<()> {
    let filtered = !args.filters.is_empty();
    let mut out = std::io::stdout().lock();
    let written = (|| {
        if args.verbose {
            for r in records {
                write_verbose(&mut out, r)?;
            }
        } else {
            write_table(&mut out, records)?;
        }
        // As buildx: the summary only for the whole, unfiltered list.
        if !filtered {
            write_summary(&mut out, records)?;
        }
        Ok::<(), std::io::Error>(())
    })();
    match written {
        // `kiln du | head`: the reader has all it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn ago(t: i64) -> String {
    format!("{} ago", human_duration(now() - t))
}

/// buildx's table: ID, RECLAIMABLE, SIZE (`*` = shared), LAST ACCESSED, and what made it.
fn write_table(out: &mut impl Write, records: &[UsageRecord]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<12} {:<12} {:<24} DESCRIPTION",
        "ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"
    )?;
    for r in records {
        let mut size = human_size(r.size);
        if r.shared {
            size.push('*');
        }
        let mut desc: String = r.description.chars().take(60).collect();
        if desc.len() < r.description.len() {
            desc.push('…');
        }
        writeln!(
            out,
            "{:<20} {:<12} {:<12} {:<24} {desc}",
            r.id,
            r.reclaimable(),
            size,
            ago(r.last_used)
        )?;
    }
    Ok(())
}

/// buildx's `--verbose` block.
fn write_verbose(out: &mut impl Write, r: &UsageRecord) -> std::io::Result<()> {
    let time = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    writeln!(out, "ID:\t\t{}", r.id)?;
    if let Some(p) = &r.parent {
        writeln!(out, "Parents:\n - {p}")?;
    }
    writeln!(out, "Created at:\t{}", time(r.created))?;
    writeln!(out, "Mutable:\tfalse")?;
    writeln!(out, "Reclaimable:\t{}", r.reclaimable())?;
    writeln!(out, "Shared:\t\t{}", r.shared)?;
    writeln!(out, "Size:\t\t{}", human_size(r.size))?;
    if !r.description.is_empty() {
        writeln!(out, "Description:\t{}", r.description)?;
    }
    writeln!(out, "Last used:\t{}", ago(r.last_used))?;
    writeln!(out, "Type:\t\t{}\n", r.record_type.as_str())?;
    Ok(())
}

fn write_summary(out: &mut impl Write, records: &[UsageRecord]) -> std::io::Result<()> {
    let total: u64 = records.iter().map(|r| r.size).sum();
    let reclaimable: u64 = records
        .iter()
        .filter(|r| r.reclaimable())
        .map(|r| r.size)
        .sum();
    let shared: u64 = records.iter().filter(|r| r.shared).map(|r| r.size).sum();
    if shared > 0 {
        writeln!(out, "Shared:\t\t{}", human_size(shared))?;
        writeln!(out, "Private:\t{}", human_size(total - shared))?;
    }
    writeln!(out, "Reclaimable:\t{}", human_size(reclaimable))?;
    writeln!(out, "Total:\t\t{}", human_size(total))?;
    Ok(())
}
