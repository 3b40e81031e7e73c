//! Small pure helpers: path cleaning, --chown/--chmod parsing, EXPOSE specs, Go-style
//! formatting for history strings.

use kiln_solver::llb::{ChmodOpt, ChownOpt, UserOpt};

/// Go's `path.Clean` for absolute paths.
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Resolves `p` against `cwd` (BuildKit's `pathRelativeToWorkingDir`): cleaned, and a trailing
/// `/` (or `.`/`""`, meaning the working directory itself) is kept as a trailing `/`.
pub(crate) fn dest_path(cwd: &str, p: &str) -> String {
    let p = if p.is_empty() || p == "." { "./" } else { p };
    let keep_slash = p.ends_with('/') || p.ends_with("/.");
    let joined = if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!("{cwd}/{p}"))
    };
    if keep_slash && joined != "/" {
        format!("{joined}/")
    } else {
        joined
    }
}

/// WORKDIR: relative paths resolve against the previous working directory.
pub(crate) fn workdir(cwd: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean(p)
    } else {
        clean(&format!("{}/{p}", if cwd.is_empty() { "/" } else { cwd }))
    }
}

fn user_opt(s: &str) -> UserOpt {
    match s.parse::<u32>() {
        Ok(id) => UserOpt::Id(id),
        Err(_) => UserOpt::Name(s.to_string()),
    }
}

/// `user[:group]` as in `--chown` and USER. A numeric user without a group gets the same
/// numeric group (Docker); a named user without a group is left for the builder, which uses
/// that user's primary group from the base tree's /etc/passwd.
pub(crate) fn parse_chown(s: &str) -> Option<ChownOpt> {
    if s.is_empty() {
        return None;
    }
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let user = (!user.is_empty()).then(|| user_opt(user));
    let group = match group {
        Some(g) if !g.is_empty() => Some(user_opt(g)),
        Some(_) => None,
        None => match &user {
            Some(UserOpt::Id(id)) => Some(UserOpt::Id(*id)),
            _ => None,
        },
    };
    Some(ChownOpt { user, group })
}

/// `--chmod`: octal up to 07777, or a symbolic mode (`u+x,go=rX`).
pub(crate) fn parse_chmod(s: &str) -> Result<ChmodOpt, String> {
    let non_octal = || {
        format!("invalid chmod parameter: '{s}'. it should be octal string and between 0 and 07777")
    };
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        let m = u32::from_str_radix(s, 8).map_err(|_| non_octal())?;
        if m > 0o7777 {
            return Err(non_octal());
        }
        return Ok(ChmodOpt::Octal(m));
    }
    for clause in s.split(',') {
        let who_len = clause
            .find(|c: char| !"ugoa".contains(c))
            .unwrap_or(clause.len());
        let rest = &clause[who_len..];
        let mut chars = rest.chars().peekable();
        let mut ops = 0;
        while let Some(op) = chars.next() {
            if !"+-=".contains(op) {
                return Err(format!("invalid chmod parameter: '{s}'"));
            }
            ops += 1;
            while let Some(&c) = chars.peek() {
                if "rwxXstugo".contains(c) {
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if ops == 0 {
            return Err(format!("invalid chmod parameter: '{s}'"));
        }
    }
    Ok(ChmodOpt::Symbolic(s.to_string()))
}

/// EXPOSE specs (`80`, `80/udp`, `7000-7002`, `8443/TCP`, `[ip:]host:container[/proto]`)
/// into `port/proto` keys.
pub(crate) fn parse_ports(spec: &str) -> Result<Vec<String>, String> {
    let (port, proto) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto.is_empty() {
        return Err(format!("invalid proto: {spec}"));
    }
    // With host mappings only the container port matters for the image.
    let port = port.rsplit(':').next().unwrap_or(port);
    let bad = || format!("invalid containerPort: {port}");
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = port.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid range specified for container port: {port}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "WINCH",
];

/// STOPSIGNAL: a number, a name (`SIGTERM`/`TERM`) or `RTMIN+n`.
pub(crate) fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0 && n < 65;
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX")
}

/// Go's `fmt.Sprintf("%q", []string)`: `["a" "b"]`.
pub(crate) fn go_quoted_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| crate::parser::go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub(crate) fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Go's `time.Duration.String()`.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", trim_frac(u as f64 / 1e3))
    } else if u < 1_000_000_000 {
        format!("{}ms", trim_frac(u as f64 / 1e6))
    } else {
        let total_s = u / 1_000_000_000;
        let frac = u % 1_000_000_000;
        let h = total_s / 3600;
        let m = (total_s % 3600) / 60;
        let s = total_s % 60;
        let secs = if frac == 0 {
            format!("{s}s")
        } else {
            let f = format!("{frac:09}");
            format!("{s}.{}s", f.trim_end_matches('0'))
        };
        if h > 0 {
            format!("{h}h{m}m{secs}")
        } else if m > 0 {
            format!("{m}m{secs}")
        } else {
            secs
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

fn trim_frac(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(dest_path("/app", "x"), "/app/x");
        assert_eq!(dest_path("/app", "x/"), "/app/x/");
        assert_eq!(dest_path("/app", "."), "/app/");
        assert_eq!(dest_path("/app", "./"), "/app/");
        assert_eq!(dest_path("/", "."), "/");
        assert_eq!(dest_path("/app", "/a/../b/"), "/b/");
        assert_eq!(workdir("/a", "b/../c"), "/a/c");
        assert_eq!(workdir("/a", "/x/"), "/x");
    }

    #[test]
    fn chown() {
        let c = parse_chown("1500").unwrap();
        assert_eq!(c.user, Some(UserOpt::Id(1500)));
        assert_eq!(c.group, Some(UserOpt::Id(1500)));
        let c = parse_chown("appuser").unwrap();
        assert_eq!(c.user, Some(UserOpt::Name("appuser".into())));
        assert_eq!(c.group, None);
        let c = parse_chown(":staff").unwrap();
        assert_eq!(c.user, None);
        assert_eq!(c.group, Some(UserOpt::Name("staff".into())));
        let c = parse_chown("a:10").unwrap();
        assert_eq!(c.group, Some(UserOpt::Id(10)));
    }

    #[test]
    fn chmod() {
        assert_eq!(parse_chmod("755"), Ok(ChmodOpt::Octal(0o755)));
        assert_eq!(parse_chmod("0640"), Ok(ChmodOpt::Octal(0o640)));
        assert!(parse_chmod("17777").is_err());
        assert!(parse_chmod("789").is_err());
        assert_eq!(
            parse_chmod("u=rwX,go=rX"),
            Ok(ChmodOpt::Symbolic("u=rwX,go=rX".into()))
        );
        assert!(parse_chmod("bogus").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_ports("8443/TCP").unwrap(), vec!["8443/tcp"]);
        assert_eq!(
            parse_ports("7000-7002/udp").unwrap(),
            vec!["7000/udp", "7001/udp", "7002/udp"]
        );
        assert_eq!(parse_ports("127.0.0.1:8080:80").unwrap(), vec!["80/tcp"]);
        assert!(parse_ports("abc").is_err());
    }

    #[test]
    fn go_formats() {
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(
            go_quoted_list(&["/bin/sh".into(), "-c".into()]),
            "[\"/bin/sh\" \"-c\"]"
        );
        assert!(valid_signal("SIGTERM") && valid_signal("9") && valid_signal("kill"));
        assert!(!valid_signal("SIGFOO"));
    }
}
