//! The predefined proxy ARGs (`HTTP_PROXY`, `HTTPS_PROXY`, `FTP_PROXY`, `NO_PROXY`,
//! `ALL_PROXY`, any case): given as build args, every `RUN` sees them in its environment
//! without an `ARG`, and — as in BuildKit, where they travel beside the op and are cut from
//! its cache key — they change neither the cache key nor the image history. A declared `ARG`
//! or `ENV` of the same name wins.

use std::collections::BTreeMap;

const NAMES: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

/// `NAME=value` and `name=value` for each proxy build arg. When a name is given in several
/// cases, the last in sorted order wins, as BuildKit reads them.
pub fn from_build_args(args: &BTreeMap<String, String>) -> Vec<String> {
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in args {
        if let Some(n) = NAMES.iter().find(|n| k.eq_ignore_ascii_case(n)) {
            values.insert(n, v);
        }
    }
    NAMES
        .iter()
        .filter_map(|n| values.get(n).map(|v| (n, v)))
        .flat_map(|(n, v)| {
            [
                format!("{}={v}", n.to_ascii_uppercase()),
                format!("{n}={v}"),
            ]
        })
        .collect()
}

/// `env` with the `proxy` entries whose names it does not set already.
pub fn add_to(env: &mut Vec<String>, proxy: &[String]) {
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    for p in proxy {
        let Some((key, _)) = p.split_once('=') else {
            continue;
        };
        if !has(env, key) {
            env.push(p.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn proxy_args_in_both_cases() {
        let env = from_build_args(&args(&[
            ("https_proxy", "http://p:3128"),
            ("NO_PROXY", "localhost"),
            ("OTHER", "x"),
        ]));
        assert_eq!(
            env,
            [
                "HTTPS_PROXY=http://p:3128",
                "https_proxy=http://p:3128",
                "NO_PROXY=localhost",
                "no_proxy=localhost"
            ]
        );
        // Sorted: "HTTP_PROXY" < "http_proxy", so the lower-case one wins.
        let env = from_build_args(&args(&[("HTTP_PROXY", "a"), ("http_proxy", "b")]));
        assert_eq!(env, ["HTTP_PROXY=b", "http_proxy=b"]);
        assert!(from_build_args(&args(&[("PROXY", "x")])).is_empty());
    }

    #[test]
    fn declared_values_win() {
        let mut env = vec!["HTTP_PROXY=declared".to_string()];
        add_to(
            &mut env,
            &["HTTP_PROXY=arg".into(), "http_proxy=arg".into()],
        );
        assert_eq!(env, ["HTTP_PROXY=declared", "http_proxy=arg"]);
    }
}
