//! Pieces of a `host[:port]` as written in references and config keys.

use std::net::IpAddr;

/// `host[:port]` → (`host`, `port`); an IPv6 literal keeps its brackets (`[::1]:5000` →
/// `[::1]`, `5000`).
pub fn split_port(host_port: &str) -> (&str, Option<&str>) {
    if host_port.starts_with('[') {
        return match host_port.find(']') {
            Some(end) => {
                let (host, rest) = host_port.split_at(end + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (host_port, None),
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    }
}

/// True for `localhost` and loopback addresses, with or without a port: registries there are
/// reached over plain HTTP, as docker and containerd do.
pub fn is_loopback(host_port: &str) -> bool {
    let host = split_port(host_port).0;
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_ports() {
        assert_eq!(split_port("h:1"), ("h", Some("1")));
        assert_eq!(split_port("h"), ("h", None));
        assert_eq!(split_port("[::1]:5000"), ("[::1]", Some("5000")));
        assert_eq!(split_port("[::1]"), ("[::1]", None));
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.1.2.3:9"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("LOCALHOST:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("localhost.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }
}
