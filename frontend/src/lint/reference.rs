//! Whether a string can be an image reference (Docker's `reference` grammar, enough to tell
//! an empty or malformed base name from a plausible one).

use std::sync::OnceLock;

use regex::Regex;

fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"(?:{label}(?:\.{label})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?");
        let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let tag = r"[\w][\w.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        Regex::new(&format!(
            r"^(?:{domain}/)?{component}(?:/{component})*(?::{tag})?(?:@{digest})?$"
        ))
        .expect("constant regex")
    })
}

pub(super) fn is_valid(s: &str) -> bool {
    s.len() <= 255 + 128 + 80 && pattern().is_match(s)
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn references() {
        for ok in [
            "alpine",
            "alpine:3.20",
            "docker.io/library/busybox:latest",
            "localhost:5000/team/app",
            "scratch",
            "build-stage",
            "a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "alpine:", "Alpine", ":tag", "a b", "/x", "x/"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
