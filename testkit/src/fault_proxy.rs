//! A TCP proxy that cuts connections mid-transfer, to test what a client does when an upload
//! dies half way (resets, retries, resumable uploads).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::background::Background;

/// Which connections the proxy cuts.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultPlan {
    /// A connection is cut once its client→upstream traffic would pass this many bytes: the
    /// first `cut_after_upstream_bytes` reach the upstream, then both sides are reset.
    pub cut_after_upstream_bytes: u64,
    /// How many connections to cut; every later connection passes through untouched.
    pub cuts: usize,
}

impl FaultPlan {
    /// Cut the first `cuts` connections that send more than `bytes` upstream.
    pub fn cut_after(bytes: u64, cuts: usize) -> FaultPlan {
        FaultPlan {
            cut_after_upstream_bytes: bytes,
            cuts,
        }
    }

    /// Never cut.
    pub fn pass_through() -> FaultPlan {
        FaultPlan::default()
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    cuts: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// A proxy on 127.0.0.1 and a free port, forwarding to a target address. It runs on its own
/// runtime thread, so synchronous tests can use it; it stops on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    _background: Background,
}

impl FaultProxy {
    /// Starts forwarding to `target` (`HOST:PORT`, e.g. a [`crate::Registry::host`]).
    pub fn start(target: &str, plan: FaultPlan) -> FaultProxy {
        let counters = Arc::new(Counters::default());
        let target = target.to_string();
        let c = counters.clone();
        let (addr, background) = Background::serve("kiln-testkit-proxy", move |client| {
            c.connections.fetch_add(1, Ordering::SeqCst);
            serve(client, target.clone(), plan, c.clone())
        });
        FaultProxy {
            addr,
            counters,
            _background: background,
        }
    }

    /// `127.0.0.1:PORT`, to use in place of the target's host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.counters.cuts.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from clients to the target.
    pub fn bytes_up(&self) -> u64 {
        self.counters.bytes_up.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the target to clients.
    pub fn bytes_down(&self) -> u64 {
        self.counters.bytes_down.load(Ordering::SeqCst)
    }
}

/// One proxied connection: two pumps; the upward one may cut the connection.
async fn serve(client: TcpStream, target: String, plan: FaultPlan, c: Arc<Counters>) {
    let Ok(upstream) = TcpStream::connect(&target).await else {
        // The client sees a closed connection, as with a target that is down.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut up_rd, mut up_wr) = upstream.into_split();

    let cut = Arc::new(tokio::sync::Notify::new());
    let (cc, cut_down) = (c.clone(), cut.clone());
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                read = up_rd.read(&mut buf) => match read {
                    Ok(n @ 1..) => n,
                    _ => break,
                },
                _ = cut_down.notified() => {
                    // No FIN before the reset: the cut must look like a dead link.
                    client_wr.forget();
                    return;
                }
            };
            if client_wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
            cc.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = client_wr.shutdown().await;
    });

    let mut sent = 0u64;
    // Whether this connection may still be cut: decided when it first passes the limit.
    let mut may_cut = plan.cuts > 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let limit = plan.cut_after_upstream_bytes;
        if may_cut && sent + n as u64 > limit {
            let claimed = c
                .cuts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |done| {
                    (done < plan.cuts).then_some(done + 1)
                })
                .is_ok();
            if claimed {
                let head = (limit - sent) as usize;
                if head > 0 && up_wr.write_all(&buf[..head]).await.is_ok() {
                    c.bytes_up.fetch_add(head as u64, Ordering::SeqCst);
                }
                // Let the head reach the upstream before the reset discards unsent data.
                let _ = up_wr.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                // SO_LINGER 0 makes the close send RST: an abrupt cut, not a clean FIN.
                let _ = client_rd.as_ref().set_zero_linger();
                let _ = up_wr.as_ref().set_zero_linger();
                cut.notify_one();
                let _ = down.await;
                up_wr.forget();
                return;
            }
            may_cut = false;
        }
        if up_wr.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n as u64;
        c.bytes_up.fetch_add(n as u64, Ordering::SeqCst);
    }
    // The client finished sending: pass the half-close on and let the response drain.
    let _ = up_wr.shutdown().await;
    let _ = down.await;
}
