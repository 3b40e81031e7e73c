//! The generated /etc/hosts and /etc/resolv.conf bind-mounted into every container.

use kiln_solver::llb::NetMode;

const GOOGLE_DNS: [&str; 4] = [
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
];

/// BuildKit's hosts file: loopback names plus the sandbox hostname.
pub fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

fn nameservers(conf: &str) -> impl Iterator<Item = &str> {
    conf.lines().filter_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver")).then(|| w.next()).flatten()
    })
}

fn is_localhost(ns: &str) -> bool {
    ns.starts_with("127.") || ns == "::1"
}

/// The container's resolv.conf derived from the host's: a loopback resolver is unreachable
/// from another network namespace, so (as BuildKit does) those nameservers are dropped unless
/// the host network is shared, and Google's public DNS is used when none remain.
pub fn resolv_conf(host_conf: &str, network: NetMode) -> String {
    if network == NetMode::Host && nameservers(host_conf).next().is_some() {
        return host_conf.to_owned();
    }
    let mut out = String::new();
    for line in host_conf.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some("nameserver") && w.next().is_some_and(is_localhost) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers(&out).next().is_none() {
        for ns in GOOGLE_DNS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// The host's resolv.conf; with systemd-resolved's stub (127.0.0.53) the real upstream list.
pub fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let only_stub = nameservers(&main).all(|n| n == "127.0.0.53");
    if only_stub && nameservers(&main).next().is_some() {
        if let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return upstream;
        }
    }
    main
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_loopback_resolvers() {
        let host = "search example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.2\n";
        assert_eq!(
            resolv_conf(host, NetMode::None),
            "search example.com\nnameserver 10.0.0.2\n"
        );
        assert_eq!(resolv_conf(host, NetMode::Host), host);
        let only_local = "nameserver 127.0.0.1\noptions ndots:2\n";
        let out = resolv_conf(only_local, NetMode::None);
        assert!(out.starts_with("options ndots:2\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"));
        assert!(resolv_conf("", NetMode::Host).contains("nameserver 8.8.8.8"));
        assert!(hosts("buildkitsandbox").contains("127.0.0.1\tlocalhost buildkitsandbox\n"));
    }
}
