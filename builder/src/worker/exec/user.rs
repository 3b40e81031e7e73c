//! Resolving a Dockerfile `USER` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the
//! rootfs' /etc/passwd and /etc/group, with runc's (libcontainer's) rules as BuildKit uses them.

use super::rootfs::Root;
use super::ExecError;

const MAX_DB_FILE: u64 = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: only for the implicit form (no `:group`), from /etc/group.
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_db(root: &Root, path: &str) -> Result<Option<String>, ExecError> {
    let data = root
        .read_file(path, MAX_DB_FILE)
        .map_err(|e| ExecError::io("reading", root.path().join(&path[1..]), e))?;
    Ok(data.map(|d| String::from_utf8_lossy(&d).into_owned()))
}

fn user_error(msg: String) -> ExecError {
    ExecError::User(msg)
}

/// Resolves `spec` inside `root`.
pub fn resolve_user(root: &Root, spec: &str) -> Result<ResolvedUser, ExecError> {
    // No USER: root, looked up like any user (its groups included), as docker does.
    let spec = if spec.is_empty() { "0" } else { spec };
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let uid_num: Option<u32> = user_arg.parse().ok();
    let gid_num: Option<u32> = group_arg.parse().ok();
    // Both numeric: used as given, no lookup (BuildKit's fast path).
    if let (Some(uid), Some(gid)) = (uid_num, gid_num) {
        return Ok(ResolvedUser {
            uid,
            gid,
            additional_gids: Vec::new(),
        });
    }
    let passwd = read_db(root, "/etc/passwd")?.map(|t| parse_passwd(&t));
    let groups = read_db(root, "/etc/group")?.map(|t| parse_group(&t));

    let found = passwd
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|u| match uid_num {
            // A numeric user is always a uid.
            Some(n) => u.uid == n,
            None => u.name == user_arg,
        });
    let (uid, mut gid, matched_name) = match (found, uid_num) {
        (Some(u), _) => (u.uid, u.gid, Some(u.name.clone())),
        (None, Some(n)) => (n, 0, None),
        (None, None) => {
            return Err(user_error(format!(
                "unable to find user {user_arg}: no matching entries in passwd file"
            )))
        }
    };

    let groups = groups.as_deref().unwrap_or_default();
    let mut additional_gids = Vec::new();
    if !group_arg.is_empty() {
        let g = groups.iter().find(|g| match gid_num {
            Some(n) => g.gid == n,
            None => g.name == group_arg,
        });
        gid = match (g, gid_num) {
            (Some(g), _) => g.gid,
            (None, Some(n)) => n,
            (None, None) => {
                return Err(user_error(format!(
                    "unable to find group {group_arg}: no matching entries in group file"
                )))
            }
        };
    } else if let Some(name) = &matched_name {
        // The primary group is a supplementary group too, as BuildKit and containerd set it
        // since CVE-2023-25173 (`id` shows `groups=1000(appuser)`; conformance case 05).
        additional_gids.push(gid);
        for g in groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name))
        {
            if !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> (tempfile::TempDir, Root) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
        std::fs::write(tmp.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(tmp.path().join("etc/group"), group).unwrap();
        let r = Root::open(tmp.path()).unwrap();
        (tmp, r)
    }

    fn u(uid: u32, gid: u32, add: &[u32]) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: add.to_vec(),
        }
    }

    #[test]
    fn resolves_like_runc() {
        let (_t, r) = root_with(
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            "root:x:0:\nalice:x:1000:\nwheel:x:10:root,alice\naudio:x:29:alice\nstaff:x:50:\n",
        );
        assert_eq!(resolve_user(&r, "").unwrap(), u(0, 0, &[0, 10]));
        assert_eq!(resolve_user(&r, "root").unwrap(), u(0, 0, &[0, 10]));
        assert_eq!(
            resolve_user(&r, "alice").unwrap(),
            u(1000, 1000, &[1000, 10, 29])
        );
        assert_eq!(
            resolve_user(&r, "1000").unwrap(),
            u(1000, 1000, &[1000, 10, 29])
        );
        assert_eq!(resolve_user(&r, "alice:staff").unwrap(), u(1000, 50, &[]));
        assert_eq!(resolve_user(&r, "alice:77").unwrap(), u(1000, 77, &[]));
        assert_eq!(resolve_user(&r, "1234").unwrap(), u(1234, 0, &[]));
        assert_eq!(resolve_user(&r, "5:6").unwrap(), u(5, 6, &[]));
        assert_eq!(resolve_user(&r, "1234:staff").unwrap(), u(1234, 50, &[]));
        let e = resolve_user(&r, "bob").unwrap_err().to_string();
        assert!(e.contains("unable to find user bob"), "{e}");
        assert!(resolve_user(&r, "alice:nogroup").is_err());
    }

    #[test]
    fn missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Root::open(tmp.path()).unwrap();
        assert_eq!(resolve_user(&r, "42").unwrap(), u(42, 0, &[]));
        assert!(resolve_user(&r, "alice").is_err());
    }
}
