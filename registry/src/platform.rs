//! Platforms (`linux/arm64/v8`) and choosing one manifest out of an index.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a platform string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    pub input: String,
    pub reason: &'static str,
}

/// An OCI platform as it appears in an index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform this process runs on, in OCI spelling.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = match arch {
            "arm" => Some("v7"),
            _ => None,
        };
        Platform::new(std::env::consts::OS, arch, variant).normalized()
    }

    /// Canonical spelling: aliases folded (`aarch64` → `arm64`), default variants dropped
    /// (`arm64/v8` → `arm64`, `amd64/v1` → `amd64`) and `arm` given its default `v7`.
    pub fn normalized(&self) -> Self {
        let os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self
            .variant
            .as_deref()
            .map(str::to_ascii_lowercase)
            .filter(|v| !v.is_empty());
        let (arch, variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64", variant.filter(|v| v != "v1")),
            "aarch64" | "arm64" => ("arm64", variant.filter(|v| v != "v8" && v != "8")),
            "armhf" => ("arm", Some("v7".to_string())),
            "armel" => ("arm", Some("v6".to_string())),
            "arm" => (
                "arm",
                Some(match variant.as_deref() {
                    None | Some("7") => "v7".to_string(),
                    Some("5") => "v5".to_string(),
                    Some("6") => "v6".to_string(),
                    Some("8") => "v8".to_string(),
                    Some(v) => v.to_string(),
                }),
            ),
            "i386" | "i686" | "386" => ("386", variant),
            _ => (arch.as_str(), variant),
        };
        Platform {
            architecture: arch.to_string(),
            os,
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant,
        }
    }

    /// How well `candidate` serves a request for `self`: `None` when it cannot run, otherwise a
    /// rank where higher is better (an exact variant beats an older compatible one).
    pub fn match_rank(&self, candidate: &Platform) -> Option<u32> {
        let want = self.normalized();
        let have = candidate.normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return None;
        }
        if want.variant == have.variant {
            return Some(100);
        }
        // Older variants of the same architecture run on newer CPUs (arm v7 runs v6 and v5
        // binaries; amd64 v3 runs v2 and v1), as containerd's matcher allows.
        let level = |v: Option<&str>| -> Option<u32> {
            match v {
                None => Some(1),
                Some(v) => v.strip_prefix('v')?.parse().ok(),
            }
        };
        let compatible_family = matches!(want.architecture.as_str(), "arm" | "amd64");
        if !compatible_family {
            return None;
        }
        let w = level(want.variant.as_deref())?;
        let h = level(have.variant.as_deref())?;
        (h < w).then(|| 50 + h)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses `os/arch[/variant]`, or just `arch` (the OS is then the host's).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PlatformError {
            input: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("empty component"));
        }
        let p = match parts.as_slice() {
            [arch] => Platform::new(std::env::consts::OS, arch, None),
            [os, arch] => Platform::new(os, arch, None),
            [os, arch, variant] => Platform::new(os, arch, Some(variant)),
            _ => return Err(err("expected os/arch[/variant]")),
        };
        Ok(p.normalized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
        assert_eq!(Platform::host().os, std::env::consts::OS);
    }

    #[test]
    fn ranks_candidates() {
        let want = p("linux/arm64");
        assert_eq!(
            want.match_rank(&Platform::new("linux", "arm64", Some("v8"))),
            Some(100)
        );
        assert_eq!(want.match_rank(&p("linux/amd64")), None);
        assert_eq!(want.match_rank(&p("windows/arm64")), None);

        let arm7 = p("linux/arm/v7");
        assert_eq!(arm7.match_rank(&p("linux/arm/v7")), Some(100));
        assert!(arm7.match_rank(&p("linux/arm/v6")).is_some());
        assert!(arm7.match_rank(&p("linux/arm/v6")) > arm7.match_rank(&p("linux/arm/v5")));
        assert_eq!(p("linux/arm/v6").match_rank(&p("linux/arm/v7")), None);

        assert!(p("linux/amd64/v3").match_rank(&p("linux/amd64")).is_some());
        assert_eq!(p("linux/amd64").match_rank(&p("linux/amd64/v3")), None);
        assert_eq!(p("linux/amd64").match_rank(&p("unknown/unknown")), None);
    }

    #[test]
    fn serde_uses_oci_names() {
        let json = r#"{"architecture":"arm","os":"linux","variant":"v7","os.version":"1"}"#;
        let pl: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(pl.variant.as_deref(), Some("v7"));
        assert_eq!(pl.os_version.as_deref(), Some("1"));
    }
}
