//! Image management on the local store: images, tag, rmi, save, load, import, inspect, history.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln_frontend::image::History;
use kiln_frontend::ImageConfig;
use kiln_registry::oci::{media_type, Descriptor, Manifest};
use kiln_solver::llb::Digest;

use crate::engine::{normalize_name, Engine};
use crate::export::archive::{load_archive, write_archive, ArchiveFormat, ArchiveImage};
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
    let n = normalize_name(name)?;
    engine
        .images
        .get(&n)?
        .ok_or_else(|| anyhow!("no such image: {name}"))
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
    let r = record(engine, source)?;
    let t = normalize_name(target)?;
    engine.images.put(&t, &r.digest, &r.media_type, r.size)?;
    Ok(())
}

pub fn rmi(engine: &Engine, names: &[String]) -> Result<()> {
    let mut failed = false;
    for n in names {
        match normalize_name(n)
            .map_err(anyhow::Error::from)
            .and_then(|c| Ok(engine.images.remove(&c)?))
        {
            Ok(r) => println!("Untagged: {}", r.name),
            Err(e) => {
                eprintln!("ERROR: {n}: {e}");
                failed = true;
            }
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

pub async fn load(engine: &Engine, input: &Path) -> Result<()> {
    let f = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let content = engine.content.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        load_archive(&content, std::io::BufReader::with_capacity(1 << 20, f))
    })
    .await??;
    if loaded.is_empty() {
        bail!("{} holds no image", input.display());
    }
    for (name, desc) in loaded {
        match name {
            Some(n) => {
                let c = normalize_name(&n)?;
                engine
                    .images
                    .put(&c, &desc.digest.to_string(), &desc.media_type, desc.size)?;
                println!("Loaded image: {c}");
            }
            None => println!("Loaded image ID: {}", desc.digest),
        }
    }
    Ok(())
}

pub async fn import(engine: &Engine, tarball: &Path, name: &str) -> Result<()> {
    use crate::layer::compress::{Codec, HashingWriter, ParallelEncoder};
    let canonical = normalize_name(name)?;
    let f =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let content = engine.content.clone();
    let (diff_id, blob) = tokio::task::spawn_blocking(
        move || -> Result<(Digest, crate::store::content::Descriptor)> {
            let mut reader =
                crate::layer::decompressor(std::io::BufReader::with_capacity(1 << 20, f), None)?;
            let enc = ParallelEncoder::new(content.writer()?, Codec::Gzip { level: 6 }, 0)?;
            let mut hw = HashingWriter::new(enc);
            std::io::copy(&mut reader, &mut hw)?;
            let (enc, diff_id, _) = hw.finish();
            let blob = enc.finish()?.commit(None)?;
            Ok((diff_id, blob))
        },
    )
    .await??;
    let created = crate::export::image::now_rfc3339();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some(created.clone()),
        ..Default::default()
    };
    config.rootfs.diff_ids = vec![diff_id.to_string()];
    config.history = vec![History {
        created: Some(created),
        created_by: Some(format!("kiln import {}", tarball.display())),
        comment: Some("Imported from tarball".into()),
        ..Default::default()
    }];
    let cfg = serde_json::to_vec(&config)?;
    let cfg_desc = engine.content.ingest(&cfg[..], None)?;
    let reg =
        |d: &Digest| kiln_registry::digest::Digest::parse(d.as_str()).map_err(|e| anyhow!("{e}"));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(
            media_type::OCI_CONFIG,
            reg(&cfg_desc.digest)?,
            cfg.len() as u64,
        ),
        layers: vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            reg(&blob.digest)?,
            blob.size,
        )],
        subject: None,
        annotations: Default::default(),
    };
    let mb = serde_json::to_vec(&manifest)?;
    let md = engine.content.ingest(&mb[..], None)?;
    engine.images.put(
        &canonical,
        md.digest.as_str(),
        media_type::OCI_MANIFEST,
        mb.len() as u64,
    )?;
    println!("{}", md.digest);
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
