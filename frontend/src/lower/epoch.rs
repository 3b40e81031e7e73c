//! `SOURCE_DATE_EPOCH`, as BuildKit's Dockerfile frontend reads it: a build arg (or a global
//! `ARG SOURCE_DATE_EPOCH=…` default) holding Unix seconds. The frontend stamps its history
//! entries and WORKDIR directories with it and hands it to the exporter, which clamps the
//! image's `created` (and, with `rewrite-timestamp`, the layers' file times).

use super::FrontendError;
use super::SourceLocation;

pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// What a `SOURCE_DATE_EPOCH` value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Epoch {
    Seconds(i64),
    /// Not set: empty, or `context` with a local build context (BuildKit leaves it unset).
    Unset,
}

/// Parses a value the way BuildKit does: an integer, or `context`. BuildKit also takes the
/// name of a stage holding one remote ADD (or of a named context); kiln has neither kind of
/// source, so those fail clearly instead of building with a different epoch.
pub(super) fn parse(
    value: &str,
    stage_names: &[Option<String>],
    location: impl Fn() -> SourceLocation,
) -> Result<Epoch, FrontendError> {
    let v = value.trim();
    if v.is_empty() || v == "context" {
        return Ok(Epoch::Unset);
    }
    if let Ok(n) = v.parse::<i64>() {
        return Ok(Epoch::Seconds(n));
    }
    let is_stage = stage_names
        .iter()
        .flatten()
        .any(|n| n.eq_ignore_ascii_case(v));
    if is_stage {
        return Err(FrontendError::Unsupported {
            location: location(),
            message: format!("{SOURCE_DATE_EPOCH}={v}: taking the epoch from a stage's remote ADD"),
        });
    }
    Err(FrontendError::Invalid {
        location: location(),
        message: format!("invalid {SOURCE_DATE_EPOCH}: {v}"),
    })
}

/// The epoch as an image config time, as Go marshals a whole-second UTC `time.Time`
/// (`2024-01-01T00:00:00Z`).
pub fn rfc3339(epoch: i64) -> String {
    match chrono::DateTime::from_timestamp(epoch, 0) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        // Out of chrono's range (hundreds of thousands of years): no sane build has it.
        None => "1970-01-01T00:00:00Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> SourceLocation {
        SourceLocation::new("Dockerfile", "FROM x\n", 1, 1)
    }

    #[test]
    fn values() {
        let stages = vec![Some("src".to_string()), None];
        assert_eq!(
            parse("1700000000", &stages, loc).unwrap(),
            Epoch::Seconds(1_700_000_000)
        );
        assert_eq!(parse(" 0 ", &stages, loc).unwrap(), Epoch::Seconds(0));
        assert_eq!(parse("", &stages, loc).unwrap(), Epoch::Unset);
        assert_eq!(parse("context", &stages, loc).unwrap(), Epoch::Unset);
        assert!(matches!(
            parse("src", &stages, loc),
            Err(FrontendError::Unsupported { .. })
        ));
        let e = parse("soon", &stages, loc).unwrap_err().to_string();
        assert!(e.ends_with("invalid SOURCE_DATE_EPOCH: soon"), "{e}");
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
    }
}
