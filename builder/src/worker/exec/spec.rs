//! The OCI runtime `config.json` of a build container, shaped like BuildKit's (containerd's
//! default Unix spec, without /run, plus a read-only cgroup mount and the network files).

use serde_json::{json, Value};

use kiln_solver::llb::{NetMode, SecurityMode};

use super::user::ResolvedUser;
use super::ExtraMount;

/// Docker's default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability up to CAP_CHECKPOINT_RESTORE (40), for `--security=insecure`.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the config needs, already resolved.
pub struct SpecInput<'a> {
    pub rootfs: &'a str,
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub user: &'a ResolvedUser,
    pub hostname: &'a str,
    pub network: NetMode,
    pub security: SecurityMode,
    pub hosts_file: &'a str,
    pub resolv_file: &'a str,
    pub mounts: &'a [ExtraMount],
    pub resources: &'a super::Resources,
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": kind, "source": source, "options": options })
}

/// The destinations of the runtime's own mounts (for mount-stub bookkeeping).
pub const SYSTEM_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/resolv.conf",
    "/etc/hosts",
];

/// kiln's bounding capability set (bit n = capability n), None when it cannot be read.
fn held_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    bounding_set_of(&status)
}

fn bounding_set_of(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub fn config(input: &SpecInput<'_>) -> Value {
    let insecure = input.security == SecurityMode::Insecure;
    let wanted = if insecure { ALL_CAPS } else { DEFAULT_CAPS };
    // runc cannot grant what kiln itself does not hold (a VM or container may have dropped
    // some, e.g. CAP_SYS_RESOURCE): "all" means all of ours, as containerd's
    // WithAllCurrentCapabilities does.
    let held = held_capabilities();
    let caps: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| {
            let bit = ALL_CAPS.iter().position(|a| a == c);
            match (bit, held) {
                (Some(b), Some(h)) => h & (1u64 << b) != 0,
                _ => true,
            }
        })
        .collect();
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                if insecure { "rw" } else { "ro" },
            ],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/etc/resolv.conf",
            "bind",
            input.resolv_file,
            &["rbind", "ro"],
        ),
        mount("/etc/hosts", "bind", input.hosts_file, &["rbind", "ro"]),
    ];
    for m in input.mounts {
        mounts.push(match m {
            ExtraMount::Bind {
                source,
                dest,
                readonly,
            } => mount(
                dest,
                "bind",
                &source.to_string_lossy(),
                &["rbind", if *readonly { "ro" } else { "rw" }],
            ),
            ExtraMount::Tmpfs { dest, size } => {
                let size = size.map(|s| format!("size={s}"));
                let mut opts = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(s) = &size {
                    opts.push(s);
                }
                mount(dest, "tmpfs", "tmpfs", &opts)
            }
        });
    }

    let mut namespaces = vec![
        json!({"type": "mount"}),
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
    ];
    if input.network == NetMode::None {
        // A fresh network namespace: the runtime brings up `lo` and nothing else.
        namespaces.push(json!({"type": "network"}));
    }

    let devices = if insecure {
        json!([{ "allow": true, "access": "rwm" }])
    } else {
        json!([{ "allow": false, "access": "rwm" }])
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": { "devices": devices },
    });
    input.resources.apply(&mut linux["resources"]);
    if !insecure {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": input.user.uid,
                "gid": input.user.gid,
                "umask": 0o022,
                "additionalGids": input.user.additional_gids,
            },
            "args": input.args,
            "env": input.env,
            "cwd": input.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            // As BuildKit: setuid binaries (sudo, su) keep working in RUN.
            "noNewPrivileges": false,
        },
        "root": { "path": input.rootfs, "readonly": false },
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
mod caps_tests {
    use super::*;

    #[test]
    fn all_caps_are_listed_by_number() {
        assert_eq!(ALL_CAPS[0], "CAP_CHOWN");
        assert_eq!(ALL_CAPS[21], "CAP_SYS_ADMIN");
        assert_eq!(ALL_CAPS[24], "CAP_SYS_RESOURCE");
        assert_eq!(ALL_CAPS[40], "CAP_CHECKPOINT_RESTORE");
    }

    #[test]
    fn bounding_set_from_status() {
        let status = "Name:\tkiln\nCapPrm:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
        let b = bounding_set_of(status).unwrap();
        assert_eq!(b & (1 << 24), 0);
        assert_ne!(b & (1 << 21), 0);
        assert_eq!(bounding_set_of("Name:\tx\n"), None);
    }
}
