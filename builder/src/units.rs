//! Sizes and ages as docker's command line writes and reads them (and kiln's config files
//! read sizes the same way).

/// Decimal units (`12.346MB`), as `docker images` and `buildx du` show sizes.
pub fn human_size(n: u64) -> String {
    human_size_to(n, 3).replace(".000", "")
}

/// Decimal units with `decimals` digits after the point (`20.7MB` with 1, as `docker push`
/// shows progress); plain bytes below 1 kB.
pub fn human_size_to(n: u64, decimals: usize) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.decimals$}{}", units[u])
    }
}

/// A size flag (`--keep-storage 10GB`) as docker reads one (go-units `RAMInBytes`): a
/// number with an optional unit b, k, m, g, t, p (with or without `b`/`ib`), all powers of
/// 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let err =
        || format!("invalid size {s:?}: expected a number with an optional unit (10GB, 512m)");
    let n: f64 = num.parse().map_err(|_| err())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(err()),
    };
    Ok((n * 1024f64.powi(power)) as u64)
}

/// A duration as Go writes one (`48h`, `1h30m`, `90s`), as docker's `until` filter and
/// buildkitd.toml take them; negative durations are refused.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let ns = kiln_frontend::instructions::parse_duration_ns(s.trim())
        .map_err(|e| format!("{e} (expected e.g. 48h, 30m, 90s)"))?;
    let ns = u64::try_from(ns).map_err(|_| format!("invalid duration {s:?}: negative"))?;
    Ok(std::time::Duration::from_nanos(ns))
}

/// Config files: a size as a number of bytes or as text (`"10GB"`, `"512MiB"`).
pub fn deserialize_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size: a number of bytes, or text such as \"10GB\" or \"512MiB\"")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom("a size cannot be negative"))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<u64, E> {
            parse_size(s).map_err(E::custom)
        }
    }
    d.deserialize_any(Size).map(Some)
}

/// Config files: a duration as Go writes one (see [`parse_duration`]).
pub fn deserialize_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    match <Option<String> as serde::Deserialize>::deserialize(d)? {
        None => Ok(None),
        Some(t) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// How long ago, as go-units `HumanDuration` words it (`3 minutes`, `About an hour`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let plural = |n: i64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match s {
        0 => "Less than a second".into(),
        1..=59 => plural(s, "second"),
        60..=119 => "About a minute".into(),
        120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => plural(s / 3600, "hour"),
        172_800..=1_209_599 => plural(s / 86_400, "day"),
        1_209_600..=5_183_999 => plural(s / 604_800, "week"),
        5_184_000..=63_071_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_500_000), "1.500MB");
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("2 MiB").unwrap(), 2 << 20);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
    }

    #[test]
    fn config_sizes_and_durations() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "deserialize_size")]
            size: Option<u64>,
            #[serde(default, deserialize_with = "deserialize_duration")]
            every: Option<std::time::Duration>,
        }
        let t: T = toml::from_str("size = \"10GB\"\nevery = \"1h30m\"\n").unwrap();
        assert_eq!(t.size, Some(10 << 30));
        assert_eq!(t.every, Some(std::time::Duration::from_secs(5400)));
        let t: T = toml::from_str("size = 4096\n").unwrap();
        assert_eq!((t.size, t.every), (Some(4096), None));
        let e = toml::from_str::<T>("size = \"lots\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid size"), "{e}");
        let e = toml::from_str::<T>("every = \"2d\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown unit \"d\""), "{e}");
        let e = toml::from_str::<T>("size = -5\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("negative"), "{e}");
        assert!(parse_duration("-1h").is_err());
    }
}
