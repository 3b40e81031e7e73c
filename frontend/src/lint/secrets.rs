//! SecretsUsedInArgOrEnv: ARG and ENV names that look like credentials (BuildKit's token
//! pattern and allowlist), since their values end up in the image config or history.

use std::sync::OnceLock;

use regex::Regex;

use super::{rules, Finding};
use crate::parser::{Args, Dockerfile};

fn secret_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
        )
        .expect("constant regex")
    })
}

fn allow_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)(?:_|^)(?:public)(?:_|$)").expect("constant regex"))
}

/// Whether an ARG/ENV name looks like it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    secret_pattern().is_match(name) && !allow_pattern().is_match(name)
}

pub(super) fn check(df: &Dockerfile, out: &mut Vec<Finding>) {
    for n in &df.instructions {
        let (what, keys): (&str, Vec<&str>) = match (n.name().as_str(), &n.args) {
            ("arg", Args::Words(w)) => (
                "ARG",
                w.iter()
                    .map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k))
                    .collect(),
            ),
            ("env", Args::KeyValues(kvs)) => {
                ("ENV", kvs.iter().map(|kv| kv.key.as_str()).collect())
            }
            _ => continue,
        };
        for k in keys.into_iter().filter(|k| is_secret_name(k)) {
            out.push(Finding::at(
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                n,
                format!("Do not use ARG or ENV instructions for sensitive data ({what} {k:?})"),
            ));
        }
    }
}
