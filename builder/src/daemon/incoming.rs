//! The connections kilnd serves, from every listener at once: unix sockets as they are, TCP
//! through a TLS handshake that requires a client certificate (or plain, when explicitly
//! allowed). Handshakes run on their own tasks, so a slow or hostile client holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Who is on the other end, for the service's logs.
#[derive(Clone, Debug)]
pub struct Peer {
    /// None for unix sockets.
    pub addr: Option<SocketAddr>,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        let addr = match self {
            Conn::Unix(_) => None,
            Conn::Tcp(s) => s.peer_addr().ok(),
            Conn::Tls(s) => s.get_ref().0.peer_addr().ok(),
        };
        Peer { addr }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => $e,
            Conn::Tcp($s) => $e,
            Conn::Tls($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

type Tx = mpsc::Sender<io::Result<Conn>>;

/// Every connection of `unix` and `tcp` (through TLS with `tls`), until `stop`.
pub fn incoming(
    unix: Vec<UnixListener>,
    tcp: Vec<TcpListener>,
    tls: Option<Arc<ServerConfig>>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(16);
    for l in unix {
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = l.accept() => match a {
                        Ok((s, _)) => s,
                        Err(e) => {
                            accept_failed(e).await;
                            continue;
                        }
                    },
                };
                if tx.send(Ok(Conn::Unix(stream))).await.is_err() {
                    return;
                }
            }
        });
    }
    let acceptor = tls.map(TlsAcceptor::from);
    for l in tcp {
        let (tx, stop, acceptor) = (tx.clone(), stop.clone(), acceptor.clone());
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = l.accept() => match a {
                        Ok(a) => a,
                        Err(e) => {
                            accept_failed(e).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                match &acceptor {
                    None => {
                        if tx.send(Ok(Conn::Tcp(stream))).await.is_err() {
                            return;
                        }
                    }
                    Some(a) => {
                        tokio::spawn(handshake(a.clone(), stream, peer, tx.clone()));
                    }
                }
            }
        });
    }
    ReceiverStream::new(rx)
}

/// E.g. out of file descriptors: said, then given a moment to pass instead of spinning.
async fn accept_failed(e: io::Error) {
    tracing::warn!("accepting a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn handshake(acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr, tx: Tx) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            tracing::debug!(%peer, "TLS client connected");
            let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
        }
        // A refused client certificate shows here, and only here: the client is told by an
        // alert, without details.
        Ok(Err(e)) => tracing::warn!(%peer, "refused a TLS connection: {e}"),
        Err(_) => tracing::warn!(%peer, "TLS handshake not finished in {HANDSHAKE_TIMEOUT:?}"),
    }
}
