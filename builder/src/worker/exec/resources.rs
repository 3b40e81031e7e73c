//! Limits on RUN containers: per-build memory and CPU (`kiln build --memory/--cpu-quota`,
//! `[worker] default_*`) written into the OCI spec's `linux.resources`, and how many steps
//! may run at once (`[worker] max_parallelism`).

use serde_json::{json, Value};

/// The kernel refuses memory limits this small (runc: "minimum memory limit allowed is 6MB"
/// on cgroup v1); refused here so the user hears it before a build starts.
pub const MIN_MEMORY: u64 = 6 << 20;
/// The CFS period's bounds (microseconds), as the kernel takes them.
const PERIOD_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;

/// A RUN container's resources; unset fields are unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Bytes of memory (swap is not allowed on top: the limit is the limit).
    pub memory: Option<u64>,
    /// Microseconds of CPU time per period (e.g. 50000 of 100000 = half a CPU).
    pub cpu_quota: Option<i64>,
    /// Microseconds; the kernel's default (100000) when unset.
    pub cpu_period: Option<u64>,
}

impl Resources {
    /// `self`, with `defaults` where `self` sets nothing.
    pub fn or(self, defaults: Resources) -> Resources {
        Resources {
            memory: self.memory.or(defaults.memory),
            cpu_quota: self.cpu_quota.or(defaults.cpu_quota),
            cpu_period: self.cpu_period.or(defaults.cpu_period),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// Values the kernel would refuse: `(field, reason)`, the field as `memory`, `cpu_quota`
    /// or `cpu_period`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(m) = self.memory.filter(|m| *m < MIN_MEMORY) {
            return Err(("memory", format!("{m} bytes is below the minimum of 6MiB")));
        }
        if let Some(q) = self.cpu_quota.filter(|q| *q < 1_000) {
            return Err((
                "cpu_quota",
                format!("{q}: must be at least 1000 (microseconds per period)"),
            ));
        }
        if let Some(p) = self.cpu_period.filter(|p| !PERIOD_RANGE.contains(p)) {
            return Err((
                "cpu_period",
                format!("{p}: must be between 1000 and 1000000 (microseconds)"),
            ));
        }
        Ok(())
    }

    /// `--cpus N`: the quota of N periods (`period`, else the kernel's default).
    pub fn cpus(n: f64, period: Option<u64>) -> Result<i64, String> {
        if !(n.is_finite() && (0.01..=4096.0).contains(&n)) {
            return Err(format!("--cpus {n}: must be between 0.01 and 4096"));
        }
        Ok((n * period.unwrap_or(100_000) as f64).round() as i64)
    }

    /// The OCI `linux.resources` entries for these limits, added to `resources`.
    pub fn apply(&self, resources: &mut Value) {
        if let Some(m) = self.memory {
            // swap = limit: no swap beyond the memory limit, so that a step that needs more
            // is killed rather than slowed to a crawl (and the limit means what it says).
            resources["memory"] = json!({ "limit": m, "swap": m });
        }
        if self.cpu_quota.is_some() || self.cpu_period.is_some() {
            let mut cpu = json!({});
            if let Some(q) = self.cpu_quota {
                cpu["quota"] = json!(q);
            }
            if let Some(p) = self.cpu_period {
                cpu["period"] = json!(p);
            }
            resources["cpu"] = cpu;
        }
    }

    /// How the memory limit reads in an error: `32MiB`.
    pub fn memory_text(&self) -> Option<String> {
        self.memory.map(|m| {
            if m % (1 << 20) == 0 {
                format!("{}MiB", m >> 20)
            } else {
                format!("{m} bytes")
            }
        })
    }
}

/// As errors name them: `memory 32MiB, CPU 50000us per 100000us`.
impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(m) = self.memory_text() {
            parts.push(format!("memory {m}"));
        }
        if let Some(q) = self.cpu_quota {
            parts.push(format!(
                "CPU {q}us per {}us",
                self.cpu_period.unwrap_or(100_000)
            ));
        } else if let Some(p) = self.cpu_period {
            parts.push(format!("CPU period {p}us"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The engine's limits on RUN steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Steps running at once across all builds; None: no limit.
    pub max_parallelism: Option<usize>,
    /// Resources of every RUN container whose build sets none.
    pub defaults: Resources,
}

/// The kernel's count of OOM kills so far (`/proc/vmstat` `oom_kill`, Linux 4.13+); compared
/// before and after a step that was killed, it tells an OOM kill from another SIGKILL.
pub fn oom_kills() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    oom_kills_of(&text)
}

fn oom_kills_of(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_entries_and_defaults() {
        let mine = Resources {
            memory: Some(32 << 20),
            ..Default::default()
        };
        let defaults = Resources {
            memory: Some(1 << 30),
            cpu_quota: Some(50_000),
            cpu_period: None,
        };
        let r = mine.or(defaults);
        assert_eq!(r.memory, Some(32 << 20));
        assert_eq!(r.cpu_quota, Some(50_000));
        let mut res = json!({ "devices": [] });
        r.apply(&mut res);
        assert_eq!(
            res["memory"],
            json!({ "limit": 32 << 20, "swap": 32 << 20 })
        );
        assert_eq!(res["cpu"], json!({ "quota": 50_000 }));
        assert!(res["devices"].is_array());
        let mut none = json!({});
        Resources::default().apply(&mut none);
        assert_eq!(none, json!({}));
        assert_eq!(r.memory_text().as_deref(), Some("32MiB"));
        assert_eq!(r.to_string(), "memory 32MiB, CPU 50000us per 100000us");
    }

    #[test]
    fn refused_values() {
        let r = |memory, cpu_quota, cpu_period| Resources {
            memory,
            cpu_quota,
            cpu_period,
        };
        assert!(r(Some(6 << 20), Some(1000), Some(100_000)).check().is_ok());
        assert_eq!(
            r(Some(1 << 20), None, None).check().unwrap_err().0,
            "memory"
        );
        assert_eq!(r(None, Some(10), None).check().unwrap_err().0, "cpu_quota");
        assert_eq!(r(None, None, Some(10)).check().unwrap_err().0, "cpu_period");
        assert_eq!(Resources::cpus(0.5, None), Ok(50_000));
        assert_eq!(Resources::cpus(2.0, Some(10_000)), Ok(20_000));
        assert!(Resources::cpus(0.0, None).is_err());
        assert!(Resources::cpus(f64::NAN, None).is_err());
    }

    #[test]
    fn vmstat() {
        assert_eq!(oom_kills_of("pgfault 5\noom_kill 3\n"), Some(3));
        assert_eq!(oom_kills_of("pgfault 5\n"), None);
    }
}
