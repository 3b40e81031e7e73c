//! The servers of the in-process fixtures (token issuer, fault proxy): a listener on
//! 127.0.0.1 and a free port, served on a runtime of its own so synchronous tests can use
//! them, stopped on drop.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// A running accept loop; dropping it stops the server and its connections.
pub(crate) struct Background {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Background {
    /// Binds 127.0.0.1:0 and hands every accepted connection to `handle` on a task of its own.
    /// `name` names the runtime's threads (seen in panics and debuggers).
    pub(crate) fn serve<F, Fut>(name: &str, handle: F) -> (SocketAddr, Background)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{name}: binding 127.0.0.1:0: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{name}: building a runtime: {e}"));
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("registering a bound listener with tokio");
            loop {
                // Accept errors (e.g. too many open files) are transient: keep serving.
                if let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(handle(stream));
                }
            }
        });
        let background = Background {
            runtime: Some(runtime),
        };
        (addr, background)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // shutdown_background, not a plain drop: that would panic inside a #[tokio::test].
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
