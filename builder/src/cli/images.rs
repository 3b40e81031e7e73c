//! Image management on the local store: images, tag, rmi, save, load, import, inspect, history.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_frontend::ImageConfig;
use kiln_registry::oci::{Descriptor, Manifest};
use kiln_solver::llb::Digest;

use crate::daemon::proto::{LoadStart, Removed};
use crate::engine::Engine;
use crate::export::archive::{write_archive, ArchiveFormat, ArchiveImage};
use crate::store::images::ImageRecord;
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

fn record(engine: &Engine, name: &str) -> Result<ImageRecord> {
    Ok(engine.image_record(name)?)
}

/// Manifest + total layer size of a stored image.
fn manifest_of(engine: &Engine, digest: &str) -> Result<Manifest> {
    let d = Digest::parse(digest).ok_or_else(|| anyhow!("bad digest {digest}"))?;
    let bytes = engine
        .content
        .read_all(&d)
        .with_context(|| format!("manifest {digest}"))?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn config_of(engine: &Engine, m: &Manifest) -> Result<ImageConfig> {
    let d =
        Digest::parse(&m.config.digest.to_string()).ok_or_else(|| anyhow!("bad config digest"))?;
    Ok(serde_json::from_slice(&engine.content.read_all(&d)?)?)
}

pub fn list(engine: &Engine, args: ImagesArgs) -> Result<()> {
    let recs = engine.images.list()?;
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for r in recs {
            writeln!(out, "{}", r.digest)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<50} {:<12} {:<20} {:<20} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    )?;
    for r in recs {
        let (repo, tag) = match r.name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
            _ => (r.name.clone(), "<none>".into()),
        };
        let size: u64 = manifest_of(engine, &r.digest)
            .map(|m| m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size)
            .unwrap_or(0);
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
            human_size(size)
        )?;
    }
    Ok(())
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

fn archive_images(engine: &Engine, names: &[String]) -> Result<Vec<ArchiveImage>> {
    names
        .iter()
        .map(|n| {
            let r = record(engine, n)?;
            let d = kiln_registry::digest::Digest::parse(&r.digest).map_err(|e| anyhow!("{e}"))?;
            Ok(ArchiveImage {
                names: vec![r.name.clone()],
                manifest: Descriptor::new(r.media_type.clone(), d, r.size),
            })
        })
        .collect()
}

pub async fn save(engine: &Engine, output: &Path, names: &[String]) -> Result<()> {
    let imgs = archive_images(engine, names)?;
    // Layers the store keeps as digests only are made again from their snapshots first.
    let mut layers = Vec::new();
    for i in &imgs {
        layers.extend(
            manifest_of(engine, &i.manifest.digest.to_string())?
                .layers
                .iter()
                .map(|l| l.digest.to_string()),
        );
    }
    let (snaps, content) = (engine.snapshots.clone(), engine.content.clone());
    tokio::task::spawn_blocking(move || {
        crate::export::layers::materialize(snaps.as_ref(), &content, &layers)
    })
    .await??;
    let tmp = output.with_extension("kiln-partial");
    let f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let content = engine.content.clone();
    tokio::task::spawn_blocking(move || write_archive(&content, &imgs, ArchiveFormat::Docker, f))
        .await??;
    // Never leave a half-written archive under the requested name.
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    Ok(())
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

pub fn inspect(engine: &Engine, name: &str) -> Result<()> {
    let r = record(engine, name)?;
    let m = manifest_of(engine, &r.digest)?;
    let c = config_of(engine, &m)?;
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

pub fn history(engine: &Engine, name: &str, no_trunc: bool) -> Result<()> {
    let r = record(engine, name)?;
    let m = manifest_of(engine, &r.digest)?;
    let c = config_of(engine, &m)?;
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
