//! How docker names registries in config.json: keys may be `host`, `host:port`,
//! `https://host/`, `http://host/v1/`…, and Docker Hub goes by several names that all mean
//! `https://index.docker.io/v1/`.

/// The key docker writes for Docker Hub, and the server URL it hands credential helpers.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Host names that all mean Docker Hub.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// `host[:port]` of a config key or registry name, as docker's `ConvertToHostname` reduces it:
/// the scheme and any path dropped. Lower-cased, since host names are case-insensitive.
pub fn hostname(key: &str) -> String {
    let key = key.trim();
    let stripped = strip_prefix_ignore_case(key, "https://")
        .or_else(|| strip_prefix_ignore_case(key, "http://"))
        .unwrap_or(key);
    let host = stripped.split('/').next().unwrap_or_default();
    host.to_ascii_lowercase()
}

/// The identity of the registry a key or name refers to: its hostname, with Docker Hub's
/// aliases folded into `docker.io`. Two keys are equivalent when their identities are equal.
pub fn registry_identity(key: &str) -> String {
    let host = hostname(key);
    if is_docker_hub_host(&host) {
        DOCKER_HUB_HOSTS[0].to_string()
    } else {
        host
    }
}

/// The address docker files a registry's credentials under, in `auths` and with helpers:
/// `https://index.docker.io/v1/` for Docker Hub, plain `host[:port]` for everything else.
pub fn server_address(registry: &str) -> String {
    let host = hostname(registry);
    if is_docker_hub_host(&host) {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host
    }
}

fn is_docker_hub_host(host: &str) -> bool {
    DOCKER_HUB_HOSTS.contains(&host)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let table = [
            // (key as written, identity, address docker files it under)
            ("docker.io", "docker.io", DOCKER_HUB_SERVER),
            ("index.docker.io", "docker.io", DOCKER_HUB_SERVER),
            ("registry-1.docker.io", "docker.io", DOCKER_HUB_SERVER),
            (
                "https://index.docker.io/v1/",
                "docker.io",
                DOCKER_HUB_SERVER,
            ),
            ("http://index.docker.io/v1/", "docker.io", DOCKER_HUB_SERVER),
            (
                "https://registry-1.docker.io/v2/",
                "docker.io",
                DOCKER_HUB_SERVER,
            ),
            (
                "HTTPS://Index.Docker.IO/v1/",
                "docker.io",
                DOCKER_HUB_SERVER,
            ),
            (
                "harbor.example.com",
                "harbor.example.com",
                "harbor.example.com",
            ),
            (
                "https://harbor.example.com/",
                "harbor.example.com",
                "harbor.example.com",
            ),
            (
                "http://Harbor.Example.com/v1/",
                "harbor.example.com",
                "harbor.example.com",
            ),
            ("localhost:5000", "localhost:5000", "localhost:5000"),
            (
                "http://localhost:5000/v2/",
                "localhost:5000",
                "localhost:5000",
            ),
            ("localhost", "localhost", "localhost"),
            ("[::1]:5000", "[::1]:5000", "[::1]:5000"),
            (" ghcr.io ", "ghcr.io", "ghcr.io"),
            // A port makes a different registry, even on Docker Hub's host.
            ("docker.io:5000", "docker.io:5000", "docker.io:5000"),
        ];
        for (key, identity, address) in table {
            assert_eq!(registry_identity(key), identity, "identity of {key:?}");
            assert_eq!(server_address(key), address, "address of {key:?}");
        }
    }

    #[test]
    fn short_and_odd_input_does_not_panic() {
        assert_eq!(hostname(""), "");
        assert_eq!(hostname("http"), "http");
        assert_eq!(hostname("https://"), "");
        assert_eq!(hostname("é.example/x"), "é.example");
    }
}
