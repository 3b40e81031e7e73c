//! `type=local` (the final filesystem copied into a directory) and `type=tar` (as a tarball).

use std::path::Path;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum LocalExportError {
    #[error("exporting to {dest}: {msg}")]
    Failed { dest: String, msg: String },
}

/// Copies the tree at `src` (a mounted snapshot) into `dest`, keeping owners, modes, links and
/// xattrs. `cp -a` is the tool that does exactly this, with reflinks where the fs has them.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<(), LocalExportError> {
    let fail = |msg: String| LocalExportError::Failed {
        dest: dest.display().to_string(),
        msg,
    };
    std::fs::create_dir_all(dest).map_err(|e| fail(e.to_string()))?;
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(format!("{}/.", src.display()))
        .arg(dest)
        .output()
        .map_err(|e| fail(format!("running cp: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
