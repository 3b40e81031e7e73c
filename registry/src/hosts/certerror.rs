//! Recognising "the registry's certificate is not trusted" among transport errors, so callers
//! can say what to do about it.

use std::error::Error;
use std::path::Path;

/// True when `e` failed because the server's certificate did not verify (unknown issuer,
/// expired, wrong name…): rustls reports that deep in reqwest's cause chain.
pub fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return is_server_certificate_problem(tls);
        }
        // io::Error's source() skips the error it wraps, and hyper wraps rustls in one.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return is_server_certificate_problem(inner);
        }
        next = err.source();
    }
    false
}

fn is_server_certificate_problem(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    )
}

/// What to do about a certificate error from `host` (`host[:port]` as contacted).
pub fn certificate_hint(certs_dir: &Path, host: &str) -> String {
    format!(
        "the registry's certificate is not trusted: put its CA in {}/ca.crt (or set insecure = true for that registry in the kiln config)",
        certs_dir.join(host).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_names_the_host_directory() {
        assert_eq!(
            certificate_hint(Path::new("/etc/kiln/certs.d"), "harbor.lan:8443"),
            "the registry's certificate is not trusted: put its CA in /etc/kiln/certs.d/harbor.lan:8443/ca.crt (or set insecure = true for that registry in the kiln config)"
        );
    }
}
