//! Base images: find them in the local image store, or pull their manifest and config from a
//! registry into the content store (layers are fetched later, only if a build needs them).

use futures::StreamExt;
use kiln_frontend::ImageConfig;
use kiln_registry::oci::{media_type, Descriptor, Manifest};
use kiln_registry::reference::Reference;
use kiln_solver::llb::{Digest, Platform};

use super::Engine;
use crate::store::content::ContentStore;

/// Layers downloaded at once by `kiln pull` (docker's default is 3).
const PARALLEL_LAYER_DOWNLOADS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid image reference {0:?}: {1}")]
    Reference(String, String),
    #[error("{0}")]
    Registry(String),
    #[error("image {name}: {msg}")]
    Local { name: String, msg: String },
}

/// A locally available image: manifest and config are in the content store.
#[derive(Clone, Debug)]
pub struct LocalImage {
    /// Canonical name, e.g. `localhost:5000/library/busybox:latest`.
    pub name: String,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_name(name: &str) -> Result<String, PullError> {
    Reference::parse(name)
        .map(|r| r.to_string())
        .map_err(|e| PullError::Reference(name.to_string(), e.to_string()))
}

/// `os/arch[/variant]`, as `--platform` takes it.
pub fn parse_platform(s: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: None,
        }),
        [os, arch, variant] => Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: Some(variant.to_string()),
        }),
        _ => Err(format!(
            "invalid platform {s:?} (expected os/arch[/variant])"
        )),
    }
}

fn reg_platform(p: &Platform) -> kiln_registry::platform::Platform {
    kiln_registry::platform::Platform::new(&p.os, &p.architecture, p.variant.as_deref())
}

pub(crate) fn to_digest(d: &impl ToString) -> Result<Digest, PullError> {
    let s = d.to_string();
    Digest::parse(&s).ok_or_else(|| PullError::Registry(format!("unsupported digest {s}")))
}

impl Engine {
    /// Loads an image whose manifest is in the content store.
    pub fn load_local(
        &self,
        name: &str,
        manifest_digest: &Digest,
    ) -> Result<LocalImage, PullError> {
        let local = |msg: String| PullError::Local {
            name: name.to_string(),
            msg,
        };
        let bytes = read_blob(&self.content, manifest_digest).map_err(local)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| local(format!("bad manifest: {e}")))?;
        let cfg_digest = to_digest(&manifest.config.digest)?;
        let cfg = read_blob(&self.content, &cfg_digest).map_err(local)?;
        let config: ImageConfig =
            serde_json::from_slice(&cfg).map_err(|e| local(format!("bad image config: {e}")))?;
        Ok(LocalImage {
            name: name.to_string(),
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
        })
    }

    /// The image `name` from the local store, else pulled (manifest + config) from its registry
    /// and recorded under its name, as `docker build` does without `--pull`.
    pub async fn resolve_image(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<LocalImage, PullError> {
        let canonical = normalize_name(name)?;
        let reference = Reference::parse(name)
            .map_err(|e| PullError::Reference(name.to_string(), e.to_string()))?;
        if reference.digest().is_none() {
            if let Ok(Some(rec)) = self.images.get(&canonical) {
                if let Some(d) = Digest::parse(&rec.digest) {
                    if let Ok(img) = self.load_local(&canonical, &d) {
                        return Ok(img);
                    }
                }
            }
        }
        self.pull_metadata(&reference, &canonical, platform).await
    }

    /// Fetches manifest and config of `reference` into the content store and names it.
    pub async fn pull_metadata(
        &self,
        reference: &Reference,
        canonical: &str,
        platform: &Platform,
    ) -> Result<LocalImage, PullError> {
        let resolved = self
            .registry
            .resolve(reference, &reg_platform(platform))
            .await
            .map_err(|e| PullError::Registry(e.to_string()))?;
        let manifest_digest = to_digest(&resolved.manifest_digest)?;
        let reg = |e: String| PullError::Registry(e);
        put_blob(
            &self.content,
            &resolved.manifest_bytes,
            Some(&manifest_digest),
        )
        .map_err(reg)?;
        let cfg_digest = to_digest(&resolved.config_digest)?;
        put_blob(&self.content, &resolved.config_bytes, Some(&cfg_digest)).map_err(reg)?;
        for d in resolved
            .layers
            .iter()
            .map(|l| &l.digest)
            .chain([&resolved.config_digest])
        {
            if let Err(e) = self
                .images
                .add_blob_source(&d.to_string(), &reference.name())
            {
                tracing::warn!("recording where blob {d} comes from: {e}");
            }
        }
        if reference.digest().is_none() {
            let media = resolved.manifest_media_type.clone();
            if let Err(e) = self.images.put(
                canonical,
                manifest_digest.as_str(),
                &media,
                resolved.manifest_bytes.len() as u64,
            ) {
                tracing::warn!("recording pulled image {canonical}: {e}");
            }
        }
        self.load_local(canonical, &manifest_digest)
    }

    /// `kiln pull`: manifest, config and every layer of `name` into the content store (layers
    /// in parallel, none downloaded twice), recorded under its name. Returns the image and,
    /// per layer, whether it was downloaded (false: the store had it).
    pub async fn pull(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<(LocalImage, Vec<(Descriptor, bool)>), PullError> {
        let canonical = normalize_name(name)?;
        let reference = Reference::parse(name)
            .map_err(|e| PullError::Reference(name.to_string(), e.to_string()))?;
        let image = self.pull_metadata(&reference, &canonical, platform).await?;
        let layers = image.manifest.layers.clone();
        let fetched = futures::stream::iter(layers)
            .map(|desc| {
                let reference = reference.clone();
                async move {
                    let had = to_digest(&desc.digest).is_ok_and(|d| self.content.has(&d));
                    self.fetch_layer(&reference, &desc).await?;
                    Ok::<_, PullError>((desc, !had))
                }
            })
            .buffered(PARALLEL_LAYER_DOWNLOADS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok((image, fetched))
    }

    /// Makes sure a layer blob is in the content store, downloading it from `reference`'s
    /// repository if needed; the content store verifies the digest.
    pub async fn fetch_layer(
        &self,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<(), PullError> {
        fetch_layer(&self.content, &self.registry, reference, desc).await
    }
}

pub(crate) async fn fetch_layer(
    content: &ContentStore,
    registry: &kiln_registry::client::RegistryClient,
    reference: &Reference,
    desc: &Descriptor,
) -> Result<(), PullError> {
    let digest = to_digest(&desc.digest)?;
    if content.has(&digest) {
        return Ok(());
    }
    let mut stream = registry
        .fetch_blob(reference, desc)
        .await
        .map_err(|e| PullError::Registry(e.to_string()))?;
    let mut w = content
        .writer()
        .map_err(|e| PullError::Registry(e.to_string()))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| PullError::Registry(e.to_string()))?;
        std::io::Write::write_all(&mut w, &chunk)
            .map_err(|e| PullError::Registry(format!("writing blob {digest}: {e}")))?;
    }
    w.commit(Some(&digest))
        .map_err(|e| PullError::Registry(format!("blob {digest} from {reference}: {e}")))?;
    Ok(())
}

pub(crate) fn read_blob(content: &ContentStore, d: &Digest) -> Result<Vec<u8>, String> {
    std::fs::read(content.path(d))
        .map_err(|e| format!("blob {d} missing from the content store: {e}"))
}

pub(crate) fn put_blob(
    content: &ContentStore,
    data: &[u8],
    expected: Option<&Digest>,
) -> Result<Digest, String> {
    let d = content.ingest(data, expected).map_err(|e| e.to_string())?;
    Ok(d.digest)
}

/// Whether a layer media type is one we can unpack.
pub(crate) fn is_layer(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.")
        || mt.starts_with("application/vnd.docker.image.rootfs.")
        || mt == media_type::OCI_LAYER
}
