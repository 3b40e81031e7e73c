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
/// With `mtime` (SOURCE_DATE_EPOCH) every copied entry gets that modification time.
pub fn copy_tree(src: &Path, dest: &Path, mtime: Option<u64>) -> Result<(), LocalExportError> {
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
    if let Some(t) = mtime {
        set_mtimes(src, dest, t).map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// Sets the mtime of what was copied from `src` into `dest` (children before their
/// directory, whose mtime their creation would change), leaving the rest of `dest` alone.
fn set_mtimes(src: &Path, dest: &Path, mtime: u64) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    for ent in walkdir::WalkDir::new(src)
        .min_depth(1)
        .follow_links(false)
        .contents_first(true)
    {
        let ent = ent.map_err(std::io::Error::other)?;
        let rel = ent
            .path()
            .strip_prefix(src)
            .map_err(std::io::Error::other)?;
        filetime::set_symlink_file_times(dest.join(rel), t, t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn epoch_sets_every_copied_mtime_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let (src, dest) = (d.path().join("src"), d.path().join("dest"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("link")).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("other"), "y").unwrap();
        copy_tree(&src, &dest, Some(1000)).unwrap();
        for p in ["sub", "sub/f", "link"] {
            let m = std::fs::symlink_metadata(dest.join(p)).unwrap();
            assert_eq!(m.mtime(), 1000, "{p}");
        }
        let other = std::fs::metadata(dest.join("other")).unwrap();
        assert_ne!(other.mtime(), 1000);
    }
}
