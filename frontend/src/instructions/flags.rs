//! Instruction flags (`--from=x`, `--link`, repeated `--exclude=…`), as BuildKit's `BFlags`.

use std::collections::BTreeMap;

use super::suggest::closest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlagKind {
    Bool,
    String,
    /// May be repeated; every value is kept.
    Strings,
}

/// The flags an instruction accepts, and after [`Flags::parse`] their values.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    kinds: BTreeMap<&'static str, FlagKind>,
    values: BTreeMap<String, Vec<String>>,
}

impl Flags {
    pub(crate) fn new(spec: &[(&'static str, FlagKind)]) -> Self {
        Flags {
            kinds: spec.iter().copied().collect(),
            values: BTreeMap::new(),
        }
    }

    /// Parses `args` (each `--name[=value]`); errors name the offending flag.
    pub(crate) fn parse(mut self, args: &[String]) -> Result<Self, String> {
        for a in args {
            if a == "--" {
                break;
            }
            let Some(body) = a.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {a}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&kind) = self.kinds.get(name) else {
                let mut msg = format!("unknown flag: --{name}");
                if let Some(s) = closest(name, self.kinds.keys().copied()) {
                    msg.push_str(&format!(" (did you mean --{s}?)"));
                }
                return Err(msg);
            };
            let seen = self.values.contains_key(name);
            if seen && kind != FlagKind::Strings {
                return Err(format!("duplicate flag specified: --{name}"));
            }
            let v = match kind {
                FlagKind::Bool => match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => "true".to_string(),
                    Some("false") => "false".to_string(),
                    Some("") => return Err(format!("missing a value on flag: --{name}")),
                    Some(other) => {
                        return Err(format!(
                            "expecting boolean value for flag --{name}, not: {other}"
                        ))
                    }
                },
                FlagKind::String | FlagKind::Strings => match value {
                    Some(v) => v.to_string(),
                    None => return Err(format!("missing a value on flag: --{name}")),
                },
            };
            self.values.entry(name.to_string()).or_default().push(v);
        }
        Ok(self)
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// `None` when the flag was not given.
    pub(crate) fn bool_opt(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }

    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bool_opt(name).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kinds() {
        let f = Flags::new(&[
            ("from", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ])
        .parse(&s(&["--from=a", "--link", "--exclude=x", "--exclude=y"]))
        .unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert!(f.bool("link"));
        assert_eq!(f.strings("exclude"), s(&["x", "y"]));
    }

    #[test]
    fn errors() {
        let spec = [("from", FlagKind::String), ("link", FlagKind::Bool)];
        let e = Flags::new(&spec).parse(&s(&["--form=a"])).unwrap_err();
        assert!(
            e.contains("unknown flag: --form") && e.contains("--from"),
            "{e}"
        );
        assert!(Flags::new(&spec).parse(&s(&["--from"])).is_err());
        assert!(Flags::new(&spec).parse(&s(&["--link=maybe"])).is_err());
        assert!(Flags::new(&spec)
            .parse(&s(&["--from=a", "--from=b"]))
            .is_err());
    }
}
