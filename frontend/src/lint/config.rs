//! Which checks run and what a finding does: the `# check=skip=A,B;error=true` directive,
//! overridden by the `BUILDKIT_DOCKERFILE_CHECK` build argument (BuildKit's
//! `linter.ParseLintOptions`).

use std::collections::BTreeMap;

/// The build argument that replaces the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rule names not to report.
    pub skip: Vec<String>,
    /// `skip=all`: report nothing.
    pub skip_all: bool,
    /// `error=true`: a build with findings fails.
    pub error: bool,
}

/// An unusable check option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CheckConfigError(pub String);

impl CheckConfig {
    /// Parses `skip=A,B;error=true` (parts in any order, at most three, as BuildKit).
    pub fn parse(s: &str) -> Result<CheckConfig, CheckConfigError> {
        let mut cfg = CheckConfig::default();
        let s = s.trim();
        if s.is_empty() {
            return Ok(cfg);
        }
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(CheckConfigError(format!("invalid check option {part:?}")));
            };
            match k.trim() {
                "skip" => {
                    let v = v.trim();
                    if v == "all" {
                        cfg.skip_all = true;
                    } else {
                        cfg.skip = v.split(',').map(|r| r.trim().to_string()).collect();
                    }
                }
                "error" => {
                    cfg.error = parse_bool(v.trim()).ok_or_else(|| {
                        CheckConfigError(format!(
                            "failed to parse check option {part:?}: invalid syntax"
                        ))
                    })?;
                }
                other => return Err(CheckConfigError(format!("invalid check option {other:?}"))),
            }
        }
        Ok(cfg)
    }

    /// The configuration of one build: the build argument wins over the directive.
    pub fn for_build(
        directive: Option<&str>,
        build_args: &BTreeMap<String, String>,
    ) -> Result<CheckConfig, CheckConfigError> {
        match build_args
            .get(CHECK_BUILD_ARG)
            .map(String::as_str)
            .or(directive)
        {
            Some(s) => CheckConfig::parse(s),
            None => Ok(CheckConfig::default()),
        }
    }

    pub fn is_skipped(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|r| r == rule)
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_skip_and_error() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error && !c.skip_all);
        assert!(c.is_skipped("StageNameCasing") && !c.is_skipped("FromAsCasing"));
        let c = CheckConfig::parse(" error=1 ; skip=all").unwrap();
        assert!(c.error && c.skip_all && c.is_skipped("Anything"));
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
    }

    #[test]
    fn rejects_bad_options() {
        assert!(CheckConfig::parse("skip").is_err());
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("experimental=all").is_err());
    }

    #[test]
    fn build_arg_overrides_directive() {
        let mut args = BTreeMap::new();
        let c = CheckConfig::for_build(Some("error=true"), &args).unwrap();
        assert!(c.error);
        args.insert(CHECK_BUILD_ARG.to_string(), "skip=all".to_string());
        let c = CheckConfig::for_build(Some("error=true"), &args).unwrap();
        assert!(c.skip_all && !c.error);
    }
}
