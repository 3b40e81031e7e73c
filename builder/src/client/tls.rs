//! Reaching kilnd over TCP: TLS with the client's certificate (mutual TLS), or plain TCP when
//! no TLS file is given. The settings are the command line's (flags, `KILN_TLS_*`, a certs
//! dir); set once at start, so every command still names its daemon by address alone.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, AlertDescription};
use tonic::transport::{Channel, Endpoint, Uri};

use super::ClientError;
use crate::daemon::tls::client_config;

/// TLS files and names for `tcp://` daemons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA kilnd's certificate is checked against.
    pub ca: Option<PathBuf>,
    /// The client's certificate and key, which kilnd checks against its CA.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name kilnd's certificate must carry (default: the address's host).
    pub server_name: Option<String>,
}

/// The files a certs dir holds, as buildctl's `--tlsdir` (and docker's cert path) lay them out.
const DIR_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

impl ClientTls {
    /// Fills what is not set yet from `dir`'s `ca.pem`, `cert.pem` and `key.pem` (those that
    /// exist).
    pub fn with_dir(mut self, dir: &Path) -> ClientTls {
        let [ca, cert, key] = DIR_FILES.map(|f| Some(dir.join(f)).filter(|p| p.exists()));
        self.ca = self.ca.or(ca);
        self.cert = self.cert.or(cert);
        self.key = self.key.or(key);
        self
    }

    fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

static SETTINGS: OnceLock<ClientTls> = OnceLock::new();

/// Sets this process's TLS settings (the first call wins).
pub fn configure(tls: ClientTls) {
    let _ = SETTINGS.set(tls);
}

fn settings() -> ClientTls {
    SETTINGS.get().cloned().unwrap_or_default()
}

/// A channel to kilnd at `tcp://host_port`.
pub(super) async fn connect(host_port: &str) -> Result<Channel, ClientError> {
    let addr = format!("tcp://{host_port}");
    let connect_err = |source: tonic::transport::Error| match refused_in(&source) {
        Some(why) => ClientError::Tls(format!("kilnd at {addr}: {why}")),
        None => ClientError::Connect {
            addr: addr.clone(),
            source,
        },
    };
    // The scheme only names the transport to tonic; TLS, when used, is the connector's.
    let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
        .map_err(|e| ClientError::Address(format!("{addr}: {e}")))?;
    let tls = settings();
    if !tls.enabled() {
        PLAIN_TCP.store(true, Ordering::Relaxed);
        return endpoint.connect().await.map_err(connect_err);
    }
    let ca = tls.ca.as_deref().ok_or_else(|| {
        ClientError::Tls(
            "TLS to kilnd needs --tlscacert (the CA that signed kilnd's certificate)".into(),
        )
    })?;
    let identity = match (tls.cert.as_deref(), tls.key.as_deref()) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            return Err(ClientError::Tls(
                "--tlscert and --tlskey go together".into(),
            ))
        }
    };
    let config = client_config(ca, identity).map_err(|e| ClientError::Tls(e.to_string()))?;
    let host = tls.server_name.clone().unwrap_or_else(|| {
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string()
    });
    let name = ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Tls(format!("{host:?} is not a valid TLS server name")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let hp = host_port.to_string();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (connector, name, hp) = (connector.clone(), name.clone(), hp.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(&hp).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(name, tcp).await.map_err(|e| {
                    let why = refusal(&e).unwrap_or_else(|| format!("TLS handshake: {e}"));
                    std::io::Error::new(e.kind(), Refused(why))
                })?;
                Ok::<_, std::io::Error>(TokioIo::new(first_bytes(tls).await?))
            }
        }))
        .await
        .map_err(connect_err)
}

/// How long to wait for kilnd's first bytes after the handshake.
const FIRST_BYTES: Duration = Duration::from_secs(10);

/// Reads what kilnd sends first (its HTTP/2 settings), to be replayed. Under TLS 1.3 the
/// client's handshake ends before kilnd has checked its certificate: a refusal arrives as an
/// alert on this first read, and is reported here instead of vanishing into the connection's
/// background task (where the call would only see "operation was canceled").
async fn first_bytes<S: AsyncRead + Unpin>(mut s: S) -> std::io::Result<Primed<S>> {
    let mut head = vec![0u8; 16 << 10];
    let n = match tokio::time::timeout(FIRST_BYTES, s.read(&mut head)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            let why = refusal(&e).unwrap_or_else(|| e.to_string());
            return Err(std::io::Error::new(e.kind(), Refused(why)));
        }
        // Silent so far: HTTP/2 will find out.
        Err(_) => 0,
    };
    head.truncate(n);
    Ok(Primed {
        head,
        pos: 0,
        inner: s,
    })
}

/// A stream whose first bytes were read already.
struct Primed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Primed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Primed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TLS failure of the connector, said plainly; found again in tonic's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn refused_in(err: &(dyn StdError + 'static)) -> Option<String> {
    in_chain::<Refused>(err).map(|r| r.0.clone())
}

/// The first `T` in `err`'s chain, including inside `io::Error`s (which hide their inner
/// error from `source()`).
fn in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        let found = e.downcast_ref::<T>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<T>())
        });
        if found.is_some() {
            return found;
        }
        cur = e.source();
    }
    None
}

/// This process reached a daemon over TCP without TLS: an HTTP/2 failure then most likely
/// means the daemon expects TLS.
static PLAIN_TCP: AtomicBool = AtomicBool::new(false);

/// What a TLS failure in `err`'s chain means for the user: kilnd wants a client certificate,
/// refused the one given, or its own was not trusted. None when there is no TLS failure.
pub fn refusal(err: &(dyn StdError + 'static)) -> Option<String> {
    in_chain::<rustls::Error>(err).map(describe)
}

fn describe(e: &rustls::Error) -> String {
    use AlertDescription as A;
    match e {
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            "kilnd requires a client certificate: give --tlscert and --tlskey (or KILN_TLS_CERT and KILN_TLS_KEY, or --tlsdir)".into()
        }
        rustls::Error::AlertReceived(
            a @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied
            | A::DecryptError | A::CertificateRevoked | A::CertificateExpired
            | A::UnsupportedCertificate),
        ) => format!(
            "kilnd refused this client's certificate ({a:?}): it must be a client certificate signed by the CA kilnd trusts (its --tlscacert)"
        ),
        rustls::Error::InvalidCertificate(c) => format!(
            "kilnd's certificate is not trusted ({c:?}): check --tlscacert (and --tlsservername)"
        ),
        other => other.to_string(),
    }
}

/// A TLS refusal found in `status`, as a [`ClientError`].
pub(super) fn refused(status: &tonic::Status) -> Option<ClientError> {
    if let Some(why) = refusal(status) {
        return Some(ClientError::Tls(why));
    }
    let h2 = status.message().contains("h2 protocol error");
    (h2 && PLAIN_TCP.load(Ordering::Relaxed)).then(|| {
        ClientError::Tls(format!(
            "kilnd did not speak plain TCP ({}): it probably requires TLS; give --tlscacert, --tlscert and --tlskey",
            status.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_fills_only_what_is_missing() {
        let t = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "cert.pem"] {
            std::fs::write(t.path().join(f), "x").unwrap();
        }
        let given = ClientTls {
            cert: Some("/mine.pem".into()),
            ..Default::default()
        };
        let t2 = given.with_dir(t.path());
        assert_eq!(t2.ca, Some(t.path().join("ca.pem")));
        assert_eq!(t2.cert, Some(PathBuf::from("/mine.pem")));
        assert_eq!(t2.key, None);
        assert!(t2.enabled());
        assert!(!ClientTls::default().enabled());
    }

    #[test]
    fn refusals_read_as_what_to_do() {
        let io = std::io::Error::other(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        let m = refusal(&io).unwrap();
        assert!(m.contains("requires a client certificate"), "{m}");
        let e = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(refusal(&e)
            .unwrap()
            .contains("refused this client's certificate"));
        assert_eq!(refusal(&std::io::Error::other("plain")), None);
    }
}
