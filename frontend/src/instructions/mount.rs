//! `RUN --mount=type=…,key=value,…` into a typed mount, as BuildKit's `parseMount`.

use super::suggest::closest;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`. Values are as written after variable expansion (see [`parse_mount`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountType,
    /// Stage name/index or image to take the mount from (bind, cache).
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub readonly: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// cache id or secret/ssh id.
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub required: bool,
    /// secret as environment variable.
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Splits one CSV record (Go `encoding/csv` rules: `"…"` quotes, `""` inside is a quote).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_field_start = true;
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            c => {
                cur.push(c);
                at_field_start = false;
            }
        }
    }
    if in_quotes {
        return Err("failed to parse csv mounts: extraneous or missing \" in quoted-field".into());
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// docker's `units.RAMInBytes`: `64m`, `1g`, `512kb`, `1024` (binary multiples).
fn ram_in_bytes(v: &str) -> Result<u64, String> {
    let bad = || format!("invalid value for size: {v}");
    let num_len = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let num: f64 = v[..num_len].parse().map_err(|_| bad())?;
    let unit = v[num_len..].trim_start_matches(' ').to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    Ok((num * mult as f64) as u64)
}

const ALL_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Parses one `--mount` value. `expand` substitutes build variables in each value.
pub fn parse_mount(
    val: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RunMount, String> {
    let mut m = RunMount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        readonly: false,
        size: None,
        id: None,
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    for field in csv_fields(val)? {
        let Some((key, value)) = field.split_once('=') else {
            match field.to_ascii_lowercase().as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.as_str()
                    ))
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = expand(value)?;
        let unexpected =
            |k: &str, t: MountType| format!("unexpected key '{k}' for mount type '{}'", t.as_str());
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type \"{value}\"")),
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(unexpected(&key, m.kind));
                }
                m.required = parse_bool(&key, &value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(unexpected(&key, m.kind));
                }
                m.size = Some(ram_in_bytes(&value)?);
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value \"{value}\"")),
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                let mut msg = format!("unexpected key '{key}' in '{field}'");
                if let Some(s) = closest(&key, ALL_KEYS) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(msg);
            }
        }
    }
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    m.kind.as_str()
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    #[test]
    fn cache_and_tmpfs_and_secret() {
        let m = parse_mount("type=cache,target=/root/.cache,id=x,sharing=locked", &id).unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert!(!m.readonly);
        let m = parse_mount("type=tmpfs,dst=/t,size=64m", &id).unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = parse_mount("type=secret,id=tok,required,mode=0400,uid=1000", &id).unwrap();
        assert!(m.required && m.readonly);
        assert_eq!((m.mode, m.uid), (Some(0o400), Some(1000)));
        let m = parse_mount("target=/src,rw", &id).unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(!m.readonly);
        let m = parse_mount("\"target=/a,b\",from=build", &id).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn invalid() {
        assert!(parse_mount("type=nope", &id).is_err());
        assert!(parse_mount("type=bind,mode=0700", &id).is_err());
        assert!(parse_mount("type=bind,required", &id).is_err());
        assert!(parse_mount("type=secret", &id).is_err());
        let e = parse_mount("type=cache,targte=/x", &id).unwrap_err();
        assert!(e.contains("target"), "{e}");
    }
}
