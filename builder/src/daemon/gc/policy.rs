//! kilnd's GC policy: the `[gc]` section of kilnd.toml, and what one collection removes
//! given the records there are and the root's filesystem — pure, so it is tested here.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{invalid, ConfigError};
use crate::gc::{PrunePolicy, UsageRecord};

/// Collections run this often, and after builds (at most once per [`AFTER_BUILD_SPACING`]).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// Records unused for this long go: BuildKit's 60 days.
pub const DEFAULT_KEEP_DURATION: Duration = Duration::from_secs(60 * 86_400);
/// Without `keep_storage`: this share of the root's filesystem, as BuildKit's default.
pub const DEFAULT_KEEP_SHARE: u64 = 10;
/// Checks after builds are at least this far apart (each takes stock of the whole store).
pub const AFTER_BUILD_SPACING: Duration = Duration::from_secs(10);

/// `[gc]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcSection {
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "crate::units::deserialize_size")]
    keep_storage: Option<u64>,
    #[serde(default, deserialize_with = "crate::units::deserialize_duration")]
    keep_duration: Option<Duration>,
    #[serde(default, deserialize_with = "crate::units::deserialize_size")]
    min_free_space: Option<u64>,
    #[serde(default, deserialize_with = "crate::units::deserialize_duration")]
    interval: Option<Duration>,
}

/// The GC policy, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcConfig {
    pub enabled: bool,
    /// Bytes of build cache to keep (what tagged images share is not counted); None: a
    /// tenth of the root's filesystem.
    pub keep_storage: Option<u64>,
    /// Records unused for longer go; `0s`: none go for their age.
    pub keep_duration: Duration,
    /// Keep at least this much free on the root's filesystem (0: no such limit).
    pub min_free_space: u64,
    pub interval: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            keep_storage: None,
            keep_duration: DEFAULT_KEEP_DURATION,
            min_free_space: 0,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl GcSection {
    pub fn check(self, path: &Path) -> Result<GcConfig, ConfigError> {
        let d = GcConfig::default();
        let interval = self.interval.unwrap_or(d.interval);
        if interval < Duration::from_secs(1) {
            return Err(invalid(path, "gc.interval".into(), "must be at least 1s"));
        }
        if self.keep_storage == Some(0) {
            return Err(invalid(
                path,
                "gc.keep_storage".into(),
                "0 would remove all build cache; set enabled = false to keep everything",
            ));
        }
        Ok(GcConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            keep_storage: self.keep_storage,
            keep_duration: self.keep_duration.unwrap_or(d.keep_duration),
            min_free_space: self.min_free_space.unwrap_or(0),
            interval,
        })
    }
}

/// The root's filesystem: its size and what is free (for unprivileged users, as `df`'s
/// "Avail").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    pub size: u64,
    pub free: u64,
}

impl FsSpace {
    pub fn of(path: &Path) -> std::io::Result<FsSpace> {
        let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        let block = s.fragment_size();
        Ok(FsSpace {
            size: s.blocks().saturating_mul(block),
            free: s.blocks_available().saturating_mul(block),
        })
    }
}

/// Build cache as BuildKit's keep-bytes counts it: what tagged images share is not cache.
pub fn cache_bytes(records: &[UsageRecord]) -> u64 {
    records.iter().filter(|r| !r.shared).map(|r| r.size).sum()
}

impl GcConfig {
    /// How much cache may stay: `keep_storage` (or its default), less what must go to leave
    /// `min_free_space` free.
    pub fn limit(&self, cache: u64, fs: FsSpace) -> u64 {
        let keep = self
            .keep_storage
            .unwrap_or(fs.size / DEFAULT_KEEP_SHARE)
            .max(1);
        let deficit = self.min_free_space.saturating_sub(fs.free);
        if deficit == 0 {
            return keep;
        }
        keep.min(cache.saturating_sub(deficit)).max(1)
    }

    /// The prunes of one collection, in order: what was unused for too long, then the least
    /// recently used until the rest fits the limit. Never what tagged images share
    /// (`all` stays false) — let alone what they need, which no prune takes.
    pub fn policies(&self, records: &[UsageRecord], fs: FsSpace) -> Vec<PrunePolicy> {
        let mut out = Vec::new();
        if !self.keep_duration.is_zero() {
            out.push(PrunePolicy {
                keep_duration: Some(self.keep_duration),
                ..Default::default()
            });
        }
        let cache = cache_bytes(records);
        let limit = self.limit(cache, fs);
        if cache > limit {
            out.push(PrunePolicy {
                keep_storage: limit,
                ..Default::default()
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::RecordType;

    fn parse(text: &str) -> Result<GcConfig, ConfigError> {
        let s: GcSection = crate::config::parse_toml(text, Path::new("/k.toml"))?;
        s.check(Path::new("/k.toml"))
    }

    fn rec(size: u64, shared: bool) -> UsageRecord {
        UsageRecord {
            id: "r".into(),
            record_type: RecordType::Regular,
            size,
            created: 0,
            last_used: 0,
            description: String::new(),
            parent: None,
            in_use: false,
            shared,
        }
    }

    #[test]
    fn section_values_and_errors() {
        assert_eq!(parse("").unwrap(), GcConfig::default());
        let c = parse(
            "enabled = false\nkeep_storage = \"512MiB\"\nkeep_duration = \"48h\"\n\
             min_free_space = 1073741824\ninterval = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(
            c,
            GcConfig {
                enabled: false,
                keep_storage: Some(512 << 20),
                keep_duration: Duration::from_secs(48 * 3600),
                min_free_space: 1 << 30,
                interval: Duration::from_secs(300),
            }
        );
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert!(e("keep_storage = \"big\"\n").contains("keep_storage: "));
        assert!(e("interval = \"5\"\n").contains("interval: "));
        assert!(e("interval = \"10ms\"\n").contains("gc.interval: must be at least 1s"));
        assert!(e("keep_storage = 0\n").contains("gc.keep_storage: "));
        assert!(e("reserved_space = \"1GB\"\n").contains("unknown field"));
    }

    #[test]
    fn what_one_collection_removes() {
        let fs = FsSpace {
            size: 100_000,
            free: 50_000,
        };
        let records = [rec(6_000, false), rec(3_000, false), rec(90_000, true)];
        // Under the default limit (a tenth of the disk): only the age pass.
        let c = GcConfig::default();
        let p = c.policies(&records, fs);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].keep_duration, Some(DEFAULT_KEEP_DURATION));
        assert!(!p[0].all);
        // Over keep_storage: down to it, shared records not counted.
        let c = GcConfig {
            keep_storage: Some(5_000),
            keep_duration: Duration::ZERO,
            ..Default::default()
        };
        let p = c.policies(&records, fs);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].keep_storage, p[0].keep_duration, p[0].all),
            (5_000, None, false)
        );
        // Too little free: as much again as is missing goes.
        let c = GcConfig {
            min_free_space: 52_000,
            keep_duration: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(c.limit(9_000, fs), 7_000);
        assert_eq!(c.policies(&records, fs)[0].keep_storage, 7_000);
        // More missing than there is cache: everything that may go (the limit is never 0,
        // which would mean no limit).
        let c = GcConfig {
            min_free_space: 90_000,
            ..c
        };
        assert_eq!(c.limit(9_000, fs), 1);
        // Enough free: nothing.
        let c = GcConfig {
            min_free_space: 10_000,
            keep_duration: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.policies(&records, fs).is_empty());
    }

    #[test]
    fn filesystem_space() {
        let s = FsSpace::of(Path::new("/")).unwrap();
        assert!(s.size > 0 && s.free <= s.size, "{s:?}");
    }
}
