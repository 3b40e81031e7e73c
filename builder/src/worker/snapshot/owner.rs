//! Identity of the process owning runtime state (active snapshots, mounts, containers), so
//! that leftovers of a process killed with -9 can be told apart from a live process' state.
//! A pid alone is not enough (pids are reused), so the process start time is recorded too.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start: u64,
}

impl Owner {
    /// The current process.
    pub fn current() -> Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                start: start_time(pid).unwrap_or(0),
            }
        })
    }

    /// True while the process that recorded this identity still runs.
    pub fn is_alive(&self) -> bool {
        match start_time(self.pid) {
            Some(start) => start == self.start,
            None => false,
        }
    }

    /// A compact `pid.start` tag, usable in file names and container ids.
    pub fn tag(&self) -> String {
        format!("{}.{}", self.pid, self.start)
    }

    /// Parses a [`Owner::tag`].
    pub fn from_tag(tag: &str) -> Option<Owner> {
        let (pid, start) = tag.split_once('.')?;
        Some(Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
        })
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_alive_and_tags_round_trip() {
        let me = Owner::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        assert_eq!(Owner::from_tag(&me.tag()), Some(me));
        let other = Owner {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!other.is_alive());
        assert_eq!(Owner::from_tag("nope"), None);
    }
}
