//! Real registry fixtures for kiln's integration tests.
//!
//! Everything here runs real programs or real sockets on 127.0.0.1 and cleans up on drop:
//!
//! - [`TestPki`]: a test CA, a server certificate for 127.0.0.1/localhost, a client certificate
//!   for mTLS and a token-signing key pair, made with the `openssl` CLI.
//! - [`Registry`]: Debian's `docker-registry` (distribution 2.8) on a free port, plain or TLS
//!   (optionally requiring client certificates), with no auth, htpasswd or token auth.
//! - [`TokenIssuer`]: a Harbor-like token service (`/service/token`, GET and the OAuth2 POST
//!   flow) whose JWTs that registry accepts, with per-user repository grants and a request log.
//! - [`FaultProxy`]: a TCP proxy that cuts the first connections after N client bytes.
//! - [`OciLayout`]: a tiny OCI image layout on disk, to push with skopeo or kiln.
//! - [`FileServer`]: static files over HTTP (ETags, redirects, a request log), for `ADD <url>`
//!   and git's dumb HTTP protocol.
//! - [`preflight`]: the skip-or-fail check every test starts with.
//!
//! All fixtures are synchronous to use (their servers run on their own runtime threads), so
//! plain `#[test]`s and `#[tokio::test]`s can both use them. They panic with a message that
//! says what failed (and include the registry's log) instead of returning errors.

mod background;
mod certs;
mod fault_proxy;
mod file_server;
mod jwt;
mod oci_layout;
mod preflight;
mod registry;
mod token_issuer;

pub use certs::TestPki;
pub use fault_proxy::{FaultPlan, FaultProxy};
pub use file_server::{FileServer, FileServerOptions, Served};
pub use jwt::KeyHeader;
pub use oci_layout::OciLayout;
pub use preflight::{is_root, preflight, which};
pub use registry::{Registry, RegistryAuth, RegistryOptions, TlsFiles};
pub use token_issuer::{Scope, TokenIssuer, TokenIssuerConfig, TokenRequest};
