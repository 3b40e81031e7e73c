//! `WWW-Authenticate` parsing (RFC 7235): `Bearer realm="…",service="…",scope="a:b:pull,push"`.

use std::collections::BTreeMap;

/// The authentication scheme a registry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer,
    /// Anything else (Negotiate, Digest…), kept lowercase; kiln cannot answer these.
    Other(String),
}

/// One challenge out of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    /// Parameters with lowercase names; values unquoted and unescaped.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }
}

/// Parses every challenge in one header value. Malformed trailing input is ignored rather than
/// failing the pull: what was understood before it is still usable.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_separators();
        let Some(scheme) = p.token() else { break };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "basic" => Scheme::Basic,
            "bearer" => Scheme::Bearer,
            other => Scheme::Other(other.to_string()),
        };
        let mut params = BTreeMap::new();
        loop {
            let save = p.pos;
            p.skip_separators();
            let Some(name) = p.token() else {
                p.pos = save;
                break;
            };
            p.skip_ws();
            if p.peek() != Some(b'=') {
                // A bare token: the next challenge's scheme (or a token68 we don't use).
                p.pos = save;
                break;
            }
            p.pos += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(Challenge { scheme, params });
        // Guard against no progress on garbage such as a stray '"'.
        if p.peek()
            .is_some_and(|c| !is_tchar(c) && c != b',' && c != b' ')
        {
            break;
        }
    }
    out
}

/// Picks the challenge kiln should answer: Bearer first (it scopes access), then Basic.
pub fn preferred(challenges: &[Challenge]) -> Option<&Challenge> {
    challenges
        .iter()
        .find(|c| c.scheme == Scheme::Bearer)
        .or_else(|| challenges.iter().find(|c| c.scheme == Scheme::Basic))
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    /// A token; also accepts '/' and ':' so unquoted URLs and scopes survive lenient servers.
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// A quoted string starting at '"', with backslash escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.pos += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, Scheme::Bearer);
        assert_eq!(c[0].realm(), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].service(), Some("registry.docker.io"));
        assert_eq!(c[0].scope(), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn quoted_commas_and_escapes() {
        let c = parse_challenges(
            r#"bearer REALM="https://h/service/token", service="harbor-registry", scope="repository:a/b:pull,push", error="insufficient_scope", note="say \"hi\"""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].realm(), Some("https://h/service/token"));
        assert_eq!(c[0].scope(), Some("repository:a/b:pull,push"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));
        assert_eq!(c[0].param("note"), Some(r#"say "hi""#));
    }

    #[test]
    fn basic_and_multiple() {
        let c = parse_challenges(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, Scheme::Basic);
        assert_eq!(c[0].realm(), Some("Registry Realm"));

        let c = parse_challenges(
            r#"Negotiate, Basic realm="x", Bearer realm="https://t/token",service=reg"#,
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].scheme, Scheme::Other("negotiate".into()));
        assert_eq!(c[1].scheme, Scheme::Basic);
        assert_eq!(c[2].service(), Some("reg"));
        assert_eq!(preferred(&c).unwrap().scheme, Scheme::Bearer);
    }

    #[test]
    fn garbage_does_not_loop() {
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges("   ,, ").is_empty());
        let c = parse_challenges(r#"Bearer realm="unterminated"#);
        assert_eq!(c[0].realm(), Some("unterminated"));
        let c = parse_challenges(r#"Bearer "oops" realm=x"#);
        assert_eq!(c.len(), 1);
        let _ = parse_challenges("Bearer realm=");
        let _ = parse_challenges("=,=\"");
    }
}
