//! Recognising certificate trouble among transport errors ("the registry's certificate is not
//! trusted", "the registry refused our client certificate"), so callers can say what to do.

use std::error::Error;
use std::path::Path;

use rustls::AlertDescription;

use super::HostsConfig;

/// A TLS failure that has a known remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate did not verify (unknown issuer, expired, wrong name…).
    ServerNotTrusted,
    /// The server refused the handshake over our client certificate (or its absence).
    ClientCertificateRejected,
}

/// Finds rustls's error in reqwest's cause chain and classifies it.
pub fn tls_failure(e: &reqwest::Error) -> Option<TlsFailure> {
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return classify(tls);
        }
        // io::Error's source() skips the error it wraps, and hyper wraps rustls's error in
        // io::Errors (two deep), so step into them by hand.
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn classify(e: &rustls::Error) -> Option<TlsFailure> {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Some(TlsFailure::ServerNotTrusted)
        }
        // Alerts a server sends about the certificate the client presented (Go's registry
        // answers a missing one with bad_certificate, TLS 1.3 servers with
        // certificate_required).
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate,
        ) => Some(TlsFailure::ClientCertificateRejected),
        _ => None,
    }
}

/// True when `e` failed because the server's certificate did not verify.
pub fn is_certificate_error(e: &reqwest::Error) -> bool {
    tls_failure(e) == Some(TlsFailure::ServerNotTrusted)
}

/// What to do about a certificate error from `host` (`host[:port]` as contacted).
pub fn certificate_hint(certs_dir: &Path, host: &str) -> String {
    format!(
        "the registry's certificate is not trusted: put its CA in {}/ca.crt (or set insecure = true for that registry in the kiln config)",
        certs_dir.join(host).display()
    )
}

/// What to do when `host` refused the client certificate.
pub fn client_certificate_hint(certs_dir: &Path, host: &str) -> String {
    format!(
        "the registry refused the client certificate (or wants one): put a certificate and key it accepts in {dir}/client.cert and {dir}/client.key",
        dir = certs_dir.join(host).display()
    )
}

impl HostsConfig {
    /// [`certificate_hint`] for `host` under this config's certs_dir.
    pub fn certificate_hint(&self, host: &str) -> String {
        certificate_hint(&self.certs_dir, host)
    }

    /// The hint for `e` from `host` if it is a certificate failure with a known remedy.
    pub fn tls_hint(&self, e: &reqwest::Error, host: &str) -> Option<String> {
        tls_failure(e).map(|f| match f {
            TlsFailure::ServerNotTrusted => certificate_hint(&self.certs_dir, host),
            TlsFailure::ClientCertificateRejected => client_certificate_hint(&self.certs_dir, host),
        })
    }
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
        assert!(client_certificate_hint(Path::new("/c"), "h:1").contains("/c/h:1/client.key"));
    }

    #[test]
    fn classifies_rustls_errors() {
        use rustls::CertificateError;
        let bad = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(classify(&bad), Some(TlsFailure::ServerNotTrusted));
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(
            classify(&alert),
            Some(TlsFailure::ClientCertificateRejected)
        );
        let other = rustls::Error::AlertReceived(AlertDescription::HandshakeFailure);
        assert_eq!(classify(&other), None);
    }
}
