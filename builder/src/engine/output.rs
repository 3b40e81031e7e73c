//! Where a build's result goes: buildx's `--output` forms, parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::PushSpec;
use crate::export::containerd::ContainerdTarget;
use crate::layer::Compression;

/// Where a build's result goes (buildx's `--output` forms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    /// The local image store, under these names; pushed to them too when `push` is set.
    Image {
        names: Vec<String>,
        push: Option<PushSpec>,
        rewrite_timestamp: bool,
    },
    /// An OCI layout tarball.
    Oci {
        dest: PathBuf,
        names: Vec<String>,
        compression: Compression,
        rewrite_timestamp: bool,
    },
    /// A docker-archive tarball (also carries the OCI layout).
    Docker {
        dest: PathBuf,
        names: Vec<String>,
        compression: Compression,
        rewrite_timestamp: bool,
    },
    /// The final filesystem, copied into a directory.
    Local { dest: PathBuf },
    /// The final filesystem as a tarball.
    Tar { dest: PathBuf },
    /// An image in containerd (kubelet's `k8s.io` namespace by default), unpacked.
    Containerd {
        names: Vec<String>,
        target: ContainerdTarget,
    },
}

impl OutputSpec {
    /// The image store output for `names`, as `-t` alone asks for.
    pub fn image(names: Vec<String>) -> OutputSpec {
        OutputSpec::Image {
            names,
            push: None,
            rewrite_timestamp: false,
        }
    }

    /// BuildKit's `rewrite-timestamp`: the image's layers get file times no later than
    /// SOURCE_DATE_EPOCH.
    pub fn rewrite_timestamp(&self) -> bool {
        match self {
            OutputSpec::Image {
                rewrite_timestamp, ..
            }
            | OutputSpec::Oci {
                rewrite_timestamp, ..
            }
            | OutputSpec::Docker {
                rewrite_timestamp, ..
            } => *rewrite_timestamp,
            _ => false,
        }
    }

    /// The outputs `kiln build` asks for: its `--output` values, with `--push` (which pushes
    /// the `-t` names when no output says otherwise).
    pub fn from_cli(
        outputs: &[String],
        tags: &[String],
        push: bool,
    ) -> Result<Vec<OutputSpec>, String> {
        let mut out = outputs
            .iter()
            .map(|o| OutputSpec::parse(o, tags))
            .collect::<Result<Vec<_>, _>>()?;
        if push {
            if tags.is_empty() && out.is_empty() {
                return Err(
                    "--push needs a name to push to: add -t REGISTRY/REPOSITORY:TAG".into(),
                );
            }
            if out.is_empty() {
                out.push(OutputSpec::image(tags.to_vec()));
            }
            for o in &mut out {
                if let OutputSpec::Image { push, .. } = o {
                    push.get_or_insert_with(PushSpec::default);
                }
            }
        }
        Ok(out)
    }

    /// Where the output goes on the building host's filesystem, for outputs that are files
    /// or directories.
    pub fn host_path(&self) -> Option<&Path> {
        match self {
            OutputSpec::Oci { dest, .. }
            | OutputSpec::Docker { dest, .. }
            | OutputSpec::Local { dest }
            | OutputSpec::Tar { dest } => Some(dest),
            OutputSpec::Image { .. } | OutputSpec::Containerd { .. } => None,
        }
    }

    /// For outputs that are one file, that file's path, to redirect (the daemon writes it
    /// aside and sends it to the client).
    pub fn file_dest_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            OutputSpec::Oci { dest, .. }
            | OutputSpec::Docker { dest, .. }
            | OutputSpec::Tar { dest } => Some(dest),
            OutputSpec::Local { .. } | OutputSpec::Image { .. } | OutputSpec::Containerd { .. } => {
                None
            }
        }
    }

    /// Parses `type=oci,dest=out.tar` (or a bare path = `type=local,dest=PATH`, as buildx does).
    pub fn parse(spec: &str, tags: &[String]) -> Result<OutputSpec, String> {
        if !spec.contains('=') {
            return Ok(OutputSpec::Local {
                dest: PathBuf::from(spec),
            });
        }
        let mut kv = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("invalid output option {part:?}: expected key=value"))?;
            kv.insert(k.trim().to_string(), v.trim().to_string());
        }
        let kind = kv.remove("type").unwrap_or_else(|| "local".into());
        let mut names: Vec<String> = tags.to_vec();
        if let Some(n) = kv.remove("name") {
            names.extend(n.split(';').map(str::to_string));
        }
        let dest = kv.remove("dest").map(PathBuf::from);
        // buildx's option names; gzip is what every consumer reads.
        let compression = match kv.remove("compression") {
            None => Compression::Gzip,
            Some(c) => Compression::parse(&c)?,
        };
        let need_dest =
            |d: Option<PathBuf>| d.ok_or_else(|| format!("output type={kind} needs dest=PATH"));
        let flag = |kv: &mut BTreeMap<String, String>, k: &str, default: bool| match kv
            .remove(k)
            .as_deref()
        {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => Err(format!("option {k}={v}: expected true or false")),
        };
        let image_kind = matches!(kind.as_str(), "image" | "registry" | "oci" | "docker");
        let rewrite_timestamp = if image_kind {
            flag(&mut kv, "rewrite-timestamp", false)?
        } else {
            false
        };
        let out = match kind.as_str() {
            "image" | "registry" => {
                let push = flag(&mut kv, "push", kind == "registry")?;
                let oci_media_types = flag(&mut kv, "oci-mediatypes", true)?;
                if push && names.is_empty() {
                    return Err(format!(
                        "output type={kind} with push needs a name (name=REGISTRY/REPO:TAG or -t)"
                    ));
                }
                OutputSpec::Image {
                    names,
                    push: push.then_some(PushSpec {
                        compression,
                        oci_media_types,
                    }),
                    rewrite_timestamp,
                }
            }
            "oci" => OutputSpec::Oci {
                dest: need_dest(dest)?,
                names,
                compression,
                rewrite_timestamp,
            },
            "docker" => OutputSpec::Docker {
                dest: need_dest(dest)?,
                names,
                compression,
                rewrite_timestamp,
            },
            "local" => OutputSpec::Local {
                dest: need_dest(dest)?,
            },
            "tar" => OutputSpec::Tar {
                dest: need_dest(dest)?,
            },
            "containerd" => {
                if names.is_empty() {
                    return Err("output type=containerd needs a name (name=NAME or -t)".into());
                }
                let d = ContainerdTarget::default();
                OutputSpec::Containerd {
                    names,
                    target: ContainerdTarget {
                        address: kv.remove("address").unwrap_or(d.address),
                        namespace: kv.remove("namespace").unwrap_or(d.namespace),
                        unpack: flag(&mut kv, "unpack", true)?,
                        snapshotter: kv.remove("snapshotter").unwrap_or(d.snapshotter),
                    },
                }
            }
            other => {
                return Err(format!(
                    "unknown output type {other:?} (expected image, registry, oci, docker, local, tar or containerd)"
                ))
            }
        };
        if let Some(k) = kv.keys().next() {
            return Err(format!("unknown option {k:?} for output type={kind}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_timestamp_is_an_image_output_option() {
        let tags = vec!["app:1".to_string()];
        let o = OutputSpec::parse("type=image,rewrite-timestamp=true", &tags).unwrap();
        assert!(o.rewrite_timestamp());
        assert_eq!(
            o,
            OutputSpec::Image {
                names: tags.clone(),
                push: None,
                rewrite_timestamp: true
            }
        );
        let o = OutputSpec::parse("type=oci,dest=x.tar,rewrite-timestamp=1", &tags).unwrap();
        assert!(o.rewrite_timestamp());
        assert!(!OutputSpec::parse("type=docker,dest=x.tar", &tags)
            .unwrap()
            .rewrite_timestamp());
        assert!(OutputSpec::parse("type=local,dest=d,rewrite-timestamp=true", &tags).is_err());
        assert!(OutputSpec::parse("type=image,rewrite-timestamp=maybe", &tags).is_err());
    }
}
