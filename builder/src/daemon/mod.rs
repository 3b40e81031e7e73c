//! kilnd: the build daemon. Its config (`/etc/kiln/kilnd.toml`), the gRPC service over the
//! engine, where it listens (unix socket, socket activation) and how it talks to systemd.

pub mod proto {
    //! The generated gRPC types and stubs (builder/proto/kiln/v1/control.proto).
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kiln.v1");
}
