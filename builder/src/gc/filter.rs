//! `--filter` for `kiln du` and `kiln prune`, as buildx passes them to BuildKit: `key=value`
//! (equality; for `id` a regular expression, as buildx turns it into `id~=`), `key!=value`,
//! `key~=regex`, or a bare boolean key (`shared`, `private`, `inuse`, `mutable`). `until` is
//! not a filter but the prune's keep duration; the CLI takes it out first.

use regex::Regex;

use super::UsageRecord;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid filter {0:?}: unknown key (id, type, description, shared, private, inuse, mutable)")]
    UnknownKey(String),
    #[error("invalid filter {filter:?}: {msg}")]
    Invalid { filter: String, msg: String },
    #[error("\"until\" filter expects only one value")]
    UntilTwice,
    #[error("{key:?} filter expects a duration (e.g., '24h'): {msg}")]
    Until { key: String, msg: String },
}

#[derive(Debug, Clone)]
enum Op {
    Equals(String),
    NotEquals(String),
    Matches(Regex),
    /// A bare boolean key.
    True,
}

/// One filter over usage records.
#[derive(Debug, Clone)]
pub struct Filter {
    key: String,
    op: Op,
}

const KEYS: [&str; 7] = [
    "id",
    "type",
    "description",
    "shared",
    "private",
    "inuse",
    "mutable",
];

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        let invalid = |msg: String| FilterError::Invalid {
            filter: s.to_string(),
            msg,
        };
        let regex = |v: &str| Regex::new(v).map_err(|e| invalid(e.to_string()));
        let (key, op) = match s.split_once('=') {
            None => (s, Op::True),
            Some((k, v)) => {
                let (k, v) = (k.trim(), v.trim_start_matches('='));
                if let Some(k) = k.strip_suffix('!') {
                    (k, Op::NotEquals(v.to_string()))
                } else if let Some(k) = k.strip_suffix('~') {
                    (k, Op::Matches(regex(v)?))
                } else if k == "id" {
                    (k, Op::Matches(regex(v)?))
                } else {
                    (k, Op::Equals(v.to_string()))
                }
            }
        };
        let key = key.trim().to_ascii_lowercase();
        if !KEYS.contains(&key.as_str()) {
            return Err(FilterError::UnknownKey(s.to_string()));
        }
        Ok(Filter { key, op })
    }

    pub fn matches(&self, r: &UsageRecord) -> bool {
        let value = match self.key.as_str() {
            "id" => r.id.clone(),
            "type" => r.record_type.as_str().to_string(),
            "description" => r.description.clone(),
            "shared" => r.shared.to_string(),
            "private" => (!r.shared).to_string(),
            "inuse" => r.in_use.to_string(),
            // Committed snapshots and cache directories: nothing kiln lists is mutable.
            _ => "false".to_string(),
        };
        match &self.op {
            Op::Equals(v) => value == *v,
            Op::NotEquals(v) => value != *v,
            Op::Matches(re) => re.is_match(&value),
            Op::True => value == "true",
        }
    }
}

/// `--filter` values as typed: `until` (or its old name `unused-for`) is not a filter but
/// the keep duration, returned apart.
pub fn parse_filters(
    raw: &[String],
) -> Result<(Vec<Filter>, Option<std::time::Duration>), FilterError> {
    let mut filters = Vec::new();
    let mut until = None;
    for f in raw {
        let (key, value) = f.split_once('=').unwrap_or((f, ""));
        if matches!(key.trim(), "until" | "unused-for") {
            if until.is_some() {
                return Err(FilterError::UntilTwice);
            }
            let d = crate::units::parse_duration(value).map_err(|msg| FilterError::Until {
                key: key.trim().to_string(),
                msg,
            })?;
            until = Some(d);
            continue;
        }
        filters.push(Filter::parse(f)?);
    }
    Ok((filters, until))
}

/// True when every filter matches (no filters: everything).
pub fn all_match(filters: &[Filter], r: &UsageRecord) -> bool {
    filters.iter().all(|f| f.matches(r))
}

#[cfg(test)]
mod tests {
    use super::super::RecordType;
    use super::*;

    fn rec() -> UsageRecord {
        UsageRecord {
            id: "snap-12".into(),
            record_type: RecordType::CacheMount,
            size: 1,
            created: 0,
            last_used: 0,
            description: "[2/3] RUN make".into(),
            parent: None,
            in_use: false,
            shared: true,
        }
    }

    #[test]
    fn forms() {
        let r = rec();
        let m = |s: &str| Filter::parse(s).unwrap().matches(&r);
        assert!(m("type=exec.cachemount"));
        assert!(m("type==exec.cachemount"));
        assert!(!m("type=regular"));
        assert!(m("type!=regular"));
        assert!(
            m("id=snap-1"),
            "id is a regular expression, as buildx sends it"
        );
        assert!(!m("id=^snap-2"));
        assert!(m("description~=RUN m"));
        assert!(m("shared"));
        assert!(!m("private"));
        assert!(!m("inuse"));
        assert!(m("inuse=false"));
        assert!(matches!(
            Filter::parse("colour=red"),
            Err(FilterError::UnknownKey(_))
        ));
        assert!(Filter::parse("description~=(").is_err());
    }

    #[test]
    fn until_is_the_keep_duration() {
        let raw = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (f, until) = parse_filters(&raw(&["until=24h", "type=regular"])).unwrap();
        assert_eq!(until, Some(std::time::Duration::from_secs(86_400)));
        assert_eq!(f.len(), 1);
        assert!(parse_filters(&raw(&["until=soon"])).is_err());
        assert!(matches!(
            parse_filters(&raw(&["until=1h", "unused-for=2h"])),
            Err(FilterError::UntilTwice)
        ));
        assert!(parse_filters(&raw(&["colour=red"])).is_err());
    }
}
