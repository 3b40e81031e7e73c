//! File operations (BuildKit's FileOp): COPY/ADD, mkdir, mkfile and rm applied to a
//! writable tree, every path resolved inside its root.

mod chmod;
mod chown;
mod copy;
pub(crate) mod meta;
mod ops;
pub mod root;
mod source;
mod unpack;
pub mod wildcard;

#[cfg(test)]
mod tests;

use std::path::Path;

use kiln_solver::llb::FileAction;

pub use chmod::{BadMode, ModeSpec};
pub use chown::{resolve_owner, ChownError};
pub use copy::select_sources;
pub use root::Root;
pub use source::{walk, CopyFilter, Entry, SourceTree, Walk};
pub use wildcard::BadPattern;

#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    /// A COPY/ADD source that does not exist (or is excluded by `.dockerignore`).
    #[error("failed to compute cache key: failed to calculate checksum of ref: \"/{}\": not found", .path.trim_start_matches('/'))]
    NotFound { path: String },
    #[error("no source files were specified: wildcard {pattern:?} matched nothing")]
    NoMatch { pattern: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot copy to non-directory: {0}")]
    NotADirectory(String),
    #[error("cannot replace directory {0} with a non-directory")]
    IsADirectory(String),
    #[error("file action refers to input {0}, which this op does not have")]
    BadSource(usize),
    #[error(transparent)]
    Chown(#[from] ChownError),
    #[error(transparent)]
    Chmod(#[from] BadMode),
    #[error(transparent)]
    Wildcard(#[from] BadPattern),
    #[error(transparent)]
    Pattern(#[from] kiln_frontend::dockerignore::PatternError),
    #[error("extracting archive {path}: {source}")]
    Archive {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FileOpError {
    pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        FileOpError::Io {
            op,
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Applies `actions` in order to the writable tree mounted at `dest_root` (an overlay mount),
/// reading COPY sources from `sources[action.source]` (a read-only mounted tree, or the build
/// context directory with its .dockerignore matcher; `None` = empty tree).
pub fn apply_file_actions(
    dest_root: &Path,
    sources: &[Option<SourceTree>],
    actions: &[FileAction],
) -> Result<(), FileOpError> {
    let dest = root::Root::open(dest_root).map_err(|e| FileOpError::io("open", dest_root, e))?;
    for action in actions {
        match action {
            FileAction::Copy(c) => {
                let src = match c.source {
                    None => None,
                    Some(i) => sources.get(i).ok_or(FileOpError::BadSource(i))?.as_ref(),
                };
                copy::copy(&dest, src, c)?;
            }
            FileAction::Mkdir(m) => ops::mkdir(&dest, m)?,
            FileAction::Mkfile(m) => ops::mkfile(&dest, m)?,
            FileAction::Rm(r) => ops::rm(&dest, r)?,
        }
    }
    Ok(())
}
