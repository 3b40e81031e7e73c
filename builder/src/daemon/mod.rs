//! kilnd: the build daemon. Its config (`/etc/kiln/kilnd.toml`), the gRPC service over the
//! engine, where it listens (unix socket, socket activation) and how it talks to systemd.

mod build;
pub mod chunks;
pub mod config;
pub mod contexts;
pub mod convert;
pub mod gc;
pub mod images;
pub mod incoming;
pub mod listen;
pub mod metrics;
pub mod notify;
pub mod pidfile;
pub mod server;
pub mod service;
pub mod session;
pub mod ssh;
pub mod store;
pub mod sync;
pub mod tls;
pub mod transfer;
pub mod usage;

pub mod proto {
    //! The generated gRPC types and stubs (builder/proto/kiln/v1/control.proto).
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kiln.v1");
}
