//! Image management on the local store: images, tag, rmi, save, load, import, inspect, history.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_frontend::ImageConfig;
use kiln_registry::oci::Manifest;

use crate::daemon::proto::{LoadStart, Removed};
use crate::engine::views::{ListedImage, StoredImage};
use crate::engine::Engine;
use crate::units::human_size;

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show digests.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full digests.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `kiln images`, from the engine's listing here or kilnd's.
fn print_list(images: Vec<ListedImage>, args: &ImagesArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for r in images {
            writeln!(out, "{}", r.digest)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<50} {:<12} {:<20} {:<20} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    )?;
    for r in images {
        let (repo, tag) = match r.name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (r.name.clone(), "<none>".into()),
        };
        let id = if args.no_trunc {
            r.digest.clone()
        } else {
            r.digest
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect()
        };
        let created = chrono::DateTime::from_timestamp(r.created, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "{repo:<50} {tag:<12} {id:<20} {created:<20} {}",
            human_size(r.size)
        )?;
    }
    Ok(())
}

pub fn list(engine: &Engine, args: ImagesArgs) -> Result<()> {
    print_list(engine.list_images()?, &args)
}

pub async fn list_remote(addr: &str, args: ImagesArgs) -> Result<()> {
    print_list(crate::client::images::list(addr).await?, &args)
}

pub fn tag(engine: &Engine, source: &str, target: &str) -> Result<()> {
    Ok(engine.tag(source, target)?)
}

pub async fn tag_remote(addr: &str, source: &str, target: &str) -> Result<()> {
    Ok(crate::client::store::tag(addr, source, target).await?)
}

pub fn rmi(engine: &Engine, names: &[String]) -> Result<()> {
    report_removed(names.iter().map(|n| Removed {
        name: n.clone(),
        ..match engine.untag(n) {
            Ok(r) => Removed {
                untagged: r.name,
                ..Default::default()
            },
            Err(e) => Removed {
                error: e.to_string(),
                ..Default::default()
            },
        }
    }))
}

pub async fn rmi_remote(addr: &str, names: &[String]) -> Result<()> {
    report_removed(crate::client::store::remove(addr, names).await?.into_iter())
}

fn report_removed(removed: impl Iterator<Item = Removed>) -> Result<()> {
    let mut failed = false;
    for r in removed {
        if r.error.is_empty() {
            println!("Untagged: {}", r.untagged);
        } else {
            eprintln!("ERROR: {}: {}", r.name, r.error);
            failed = true;
        }
    }
    if failed {
        bail!("some images could not be removed");
    }
    Ok(())
}

pub async fn save(engine: &Arc<Engine>, output: &Path, names: &[String]) -> Result<()> {
    // Checked before any file is created, as through kilnd.
    for n in names {
        engine.image_record(n)?;
    }
    let tmp = crate::engine::build::partial_path(output);
    let f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let (e, names) = (engine.clone(), names.to_vec());
    let saved = tokio::task::spawn_blocking(move || e.save(&names, f)).await?;
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    // Never leave a half-written archive under the requested name.
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    Ok(())
}

pub async fn save_remote(addr: &str, output: &Path, names: &[String]) -> Result<()> {
    Ok(crate::client::images::save(addr, names, output).await?)
}

pub async fn load(engine: &Arc<Engine>, input: &Path) -> Result<()> {
    let f = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let e = engine.clone();
    let loaded =
        tokio::task::spawn_blocking(move || e.load(std::io::BufReader::with_capacity(1 << 20, f)))
            .await?
            .with_context(|| input.display().to_string())?;
    for l in loaded {
        report_loaded(&l.name.unwrap_or_default(), &l.digest);
    }
    Ok(())
}

fn report_loaded(name: &str, digest: &str) {
    if name.is_empty() {
        println!("Loaded image ID: {digest}");
    } else {
        println!("Loaded image: {name}");
    }
}

/// `kiln load` and `kiln import` through kilnd: the archive is streamed to it.
pub async fn load_remote(addr: &str, input: &Path, import_name: Option<&str>) -> Result<()> {
    let start = LoadStart {
        import_name: import_name.unwrap_or_default().to_string(),
        source: input.display().to_string(),
    };
    let resp = match crate::client::store::load(addr, input, start).await {
        // Names the file already.
        Err(e @ crate::client::ClientError::Input { .. }) => return Err(e.into()),
        r => r.with_context(|| input.display().to_string())?,
    };
    for i in resp.images {
        if import_name.is_some() {
            println!("{}", i.digest);
        } else {
            report_loaded(&i.name, &i.digest);
        }
    }
    Ok(())
}

pub async fn import(engine: &Arc<Engine>, tarball: &Path, name: &str) -> Result<()> {
    let f =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let (e, name, source) = (
        engine.clone(),
        name.to_string(),
        tarball.display().to_string(),
    );
    let digest = tokio::task::spawn_blocking(move || e.import(f, &name, &source)).await??;
    println!("{digest}");
    Ok(())
}

/// The manifest and config of a stored image, parsed.
fn parsed(s: &StoredImage) -> Result<(Manifest, ImageConfig)> {
    let m = serde_json::from_slice(&s.manifest)
        .with_context(|| format!("manifest {}", s.record.digest))?;
    let c = serde_json::from_slice(&s.config)
        .with_context(|| format!("config of {}", s.record.name))?;
    Ok((m, c))
}

/// `kiln inspect`, from the engine here or kilnd.
fn print_inspect(s: &StoredImage) -> Result<()> {
    let (m, c) = parsed(s)?;
    let r = &s.record;
    let out = serde_json::json!([{
        "Name": r.name,
        "Digest": r.digest,
        "MediaType": r.media_type,
        "Manifest": m,
        "Config": c,
    }]);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn inspect(engine: &Engine, name: &str) -> Result<()> {
    print_inspect(&engine.stored_image(name)?)
}

pub async fn inspect_remote(addr: &str, name: &str) -> Result<()> {
    print_inspect(&crate::client::images::info(addr, name).await?)
}

pub fn history(engine: &Engine, name: &str, no_trunc: bool) -> Result<()> {
    print_history(&engine.stored_image(name)?, no_trunc)
}

pub async fn history_remote(addr: &str, name: &str, no_trunc: bool) -> Result<()> {
    print_history(&crate::client::images::info(addr, name).await?, no_trunc)
}

/// `kiln history`, from the engine here or kilnd.
fn print_history(s: &StoredImage, no_trunc: bool) -> Result<()> {
    let (m, c) = parsed(s)?;
    let mut layers = m.layers.iter().rev();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<32} {:<60} {:>10} COMMENT",
        "CREATED", "CREATED BY", "SIZE"
    )?;
    for h in c.history.iter().rev() {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        let mut by = h.created_by.clone().unwrap_or_default();
        if !no_trunc && by.chars().count() > 57 {
            by = by.chars().take(57).collect::<String>() + "...";
        }
        writeln!(
            out,
            "{:<32} {:<60} {:>10} {}",
            h.created.clone().unwrap_or_default(),
            by,
            human_size(size),
            h.comment.clone().unwrap_or_default()
        )?;
    }
    Ok(())
}
