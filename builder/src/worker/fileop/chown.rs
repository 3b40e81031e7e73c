//! `--chown` resolution against the destination tree's `/etc/passwd` and `/etc/group`,
//! with BuildKit's defaults: a user without a group gets the user's primary group (a numeric
//! uid gets gid = uid), a group without a user gets uid 0.

use std::io::Read;

use kiln_solver::llb::{ChownOpt, UserOpt};
use rustix::fs::{Mode, OFlags};

use super::root::{is_not_found, Root};

/// Largest passwd/group file read (they are tiny; this bounds hostile images).
const MAX_DB: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChownError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("reading /etc/{file} of the destination: {source}")]
    Read {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves `opt` to `(uid, gid)`; `None` when neither user nor group is set.
pub fn resolve_owner(root: &Root, opt: &ChownOpt) -> Result<Option<(u32, u32)>, ChownError> {
    let (mut uid, mut gid) = (0u32, 0u32);
    match &opt.user {
        None => {}
        Some(UserOpt::Id(id)) => {
            uid = *id;
            gid = *id;
        }
        Some(UserOpt::Name(name)) => match name.parse::<u32>() {
            Ok(id) => {
                uid = id;
                gid = id;
            }
            Err(_) => {
                let db = read_db(root, "passwd")?;
                let (u, g) =
                    lookup(&db, name, true).ok_or_else(|| ChownError::NoUser(name.clone()))?;
                uid = u;
                gid = g;
            }
        },
    }
    match &opt.group {
        None => {}
        Some(UserOpt::Id(id)) => gid = *id,
        Some(UserOpt::Name(name)) => match name.parse::<u32>() {
            Ok(id) => gid = id,
            Err(_) => {
                let db = read_db(root, "group")?;
                gid = lookup(&db, name, false)
                    .ok_or_else(|| ChownError::NoGroup(name.clone()))?
                    .0;
            }
        },
    }
    if opt.user.is_none() && opt.group.is_none() {
        return Ok(None);
    }
    Ok(Some((uid, gid)))
}

fn read_db(root: &Root, file: &'static str) -> Result<String, ChownError> {
    let err = |source| ChownError::Read { file, source };
    let fd = match root.open_in(&format!("etc/{file}"), OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        // A missing database simply has no entries.
        Err(e) if is_not_found(&e) => return Ok(String::new()),
        Err(e) => return Err(err(e)),
    };
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(MAX_DB)
        .read_to_string(&mut s)
        .map_err(err)?;
    Ok(s)
}

/// Finds `name` in a passwd (`name:x:uid:gid:…`) or group (`name:x:gid:…`) file; returns
/// `(id, primary gid)` for passwd and `(gid, gid)` for group.
fn lookup(db: &str, name: &str, passwd: bool) -> Option<(u32, u32)> {
    db.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0] != name {
            return None;
        }
        let id = f[2].trim().parse().ok()?;
        if passwd {
            Some((id, f.get(3)?.trim().parse().ok()?))
        } else {
            Some((id, id))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Option<UserOpt> {
        Some(UserOpt::Name(s.into()))
    }

    #[test]
    fn like_conformance_07() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nappuser:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nnogroup:x:65534:\nappuser:x:1000:\n",
        )
        .unwrap();
        let root = Root::open(t.path()).unwrap();
        let r = |user, group| resolve_owner(&root, &ChownOpt { user, group }).unwrap();
        assert_eq!(
            r(Some(UserOpt::Id(1234)), Some(UserOpt::Id(5678))),
            Some((1234, 5678))
        );
        assert_eq!(r(Some(UserOpt::Id(1500)), None), Some((1500, 1500)));
        assert_eq!(r(name("appuser"), name("appuser")), Some((1000, 1000)));
        assert_eq!(r(name("appuser"), None), Some((1000, 1000)));
        assert_eq!(r(name("nobody"), name("appuser")), Some((65534, 1000)));
        assert_eq!(r(None, name("nogroup")), Some((0, 65534)));
        assert_eq!(r(name("appuser"), Some(UserOpt::Id(0))), Some((1000, 0)));
        assert_eq!(r(None, None), None);
        assert!(matches!(
            resolve_owner(
                &root,
                &ChownOpt {
                    user: name("ghost"),
                    group: None
                }
            ),
            Err(ChownError::NoUser(_))
        ));
    }
}
