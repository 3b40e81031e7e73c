//! The operations of the build graph. Everything here is part of an op's identity: it is
//! serialised canonically (field order as declared) and hashed. Per-run data (progress names,
//! session ids, Dockerfile spans) lives in [`super::NodeMeta`] instead.

use serde::{Deserialize, Serialize};

use super::Digest;

/// One output of another node: the node's digest and the output index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Input {
    pub digest: Digest,
    pub output: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Source(SourceOp),
    Exec(ExecOp),
    File(FileOp),
    /// Layers its inputs on top of each other, in order (first = bottom).
    Merge(MergeOp),
    /// The changes that turn `lower` into `upper`.
    Diff(DiffOp),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOp {
    /// A registry image. `reference` is pinned by the frontend to a manifest digest
    /// (`host/repo[:tag]@sha256:…`), so the op's identity changes when the image does.
    Image {
        reference: String,
        platform: Platform,
    },
    /// A directory supplied by the client at solve time (`context` = the build context).
    /// `exclude_patterns` are `.dockerignore` patterns (Docker semantics); when
    /// `include_patterns` is not empty only matching paths are part of the source.
    Local {
        name: String,
        #[serde(default)]
        include_patterns: Vec<String>,
        #[serde(default)]
        exclude_patterns: Vec<String>,
    },
    /// One file downloaded from an http(s) URL (BuildKit's HTTP source): the tree holds only
    /// `/<filename>`, mode 0600, owned by root, its mtime the response's `Last-Modified` (else
    /// the epoch). With `checksum` (`sha256:<hex>`) the content must have that digest.
    Http {
        url: String,
        filename: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
    /// A checkout of a git repository (BuildKit's git source), without `.git` unless
    /// `keep_git_dir`. `reference` is a branch, tag, full ref or commit (None = the remote's
    /// default branch); `subdir` makes that directory of the repository the tree's root;
    /// `checksum` is a commit (or annotated tag) hash prefix the ref must resolve to.
    Git {
        remote: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subdir: Option<String>,
        #[serde(default)]
        keep_git_dir: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    pub meta: ExecMeta,
    /// The root filesystem is the mount with `dest == "/"`; it comes first.
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub network: NetMode,
    #[serde(default)]
    pub security: SecurityMode,
    /// Secrets exposed as environment variables (`RUN --mount=type=secret,env=…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretEnv>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecMeta {
    pub args: Vec<String>,
    /// `KEY=value` in order.
    pub env: Vec<String>,
    /// Absolute working directory; created if missing.
    pub cwd: String,
    /// As in the image config: `name`, `uid`, `name:group`, `uid:gid` (empty = root).
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// BuildKit without CNI: the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only loopback.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Index into the node's `inputs`; `None` = an empty directory.
    pub input: Option<usize>,
    /// Sub-path of the input to mount (`"/"` or `""` = its root).
    #[serde(default)]
    pub selector: String,
    pub dest: String,
    /// The exec output index this mount's final contents become; `None` = discarded.
    pub output: Option<u32>,
    #[serde(default)]
    pub readonly: bool,
    pub kind: MountKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Bind,
    Cache {
        id: String,
        sharing: CacheSharing,
        /// Owner and permissions of a newly created cache directory (default 0755, root).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret(SecretMount),
    Ssh(SecretMount),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMount {
    pub id: String,
    pub optional: bool,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub id: String,
    pub name: String,
    pub optional: bool,
}

/// A sequence of filesystem actions applied in order to one tree: `base` (an input index,
/// `None` = an empty tree). The op has one output: the resulting tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub base: Option<usize>,
    pub actions: Vec<FileAction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    Copy(CopyAction),
    Mkdir(MkdirAction),
    Mkfile(MkfileAction),
    Rm(RmAction),
}

/// Copies `src` from the tree of input `source` to `dest` in the base tree, with the semantics
/// of Dockerfile COPY/ADD (BuildKit's FileActionCopy):
///
/// * `src` is an absolute path in the source tree; with `allow_wildcard` it may contain glob
///   patterns (`*`, `?`, `[…]`, Go filepath.Match syntax) matched against that tree.
/// * `dest` is absolute. When it ends with `/`, or several sources match, or the destination
///   is an existing directory, each source goes *into* the destination directory;
///   otherwise a single file source is written *as* `dest`.
/// * A directory source copies its contents (`dir_copy_contents`), not the directory itself.
/// * `follow_symlinks`: a symlink named by `src` (after wildcard expansion) is followed;
///   symlinks inside copied directories are always kept as symlinks.
/// * `create_dest_path`: missing parent directories of the destination are created (0755,
///   owned by `owner` when set).
/// * `attempt_unpack`: ADD semantics: a source file that is a tar archive (plain, gzip, bzip2,
///   xz) is extracted into `dest` instead of copied, keeping the archive's owners and modes.
/// * `owner` / `mode` apply to every copied entry (not to pre-existing parents).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAction {
    /// Index into the node's `inputs`; `None` = an empty tree.
    pub source: Option<usize>,
    pub src: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ChmodOpt>,
    pub follow_symlinks: bool,
    pub dir_copy_contents: bool,
    pub attempt_unpack: bool,
    pub create_dest_path: bool,
    pub allow_wildcard: bool,
    pub allow_empty_wildcard: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_patterns: Vec<String>,
    /// When set, every written entry gets this mtime (SOURCE_DATE_EPOCH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl CopyAction {
    /// A COPY with Dockerfile defaults for `src` → `dest` from input `source`.
    pub fn new(source: Option<usize>, src: impl Into<String>, dest: impl Into<String>) -> Self {
        CopyAction {
            source,
            src: src.into(),
            dest: dest.into(),
            owner: None,
            mode: None,
            follow_symlinks: true,
            dir_copy_contents: true,
            attempt_unpack: false,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: false,
            include_patterns: Vec::new(),
            exclude_patterns: Vec::new(),
            timestamp: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownOpt {
    pub user: Option<UserOpt>,
    pub group: Option<UserOpt>,
}

/// A user or group: numeric, or a name looked up in the *base* tree's /etc/passwd or
/// /etc/group when the action runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserOpt {
    Id(u32),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChmodOpt {
    Octal(u32),
    /// `u=rwX,go=rX` style, applied per entry (X = x only for dirs or already-executable).
    Symbolic(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkdirAction {
    pub path: String,
    pub mode: u32,
    pub make_parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MkfileAction {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ChownOpt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmAction {
    pub path: String,
    pub allow_not_found: bool,
    pub allow_wildcard: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffOp {
    pub lower: Option<usize>,
    pub upper: Option<usize>,
}
