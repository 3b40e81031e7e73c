//! kiln-registry: image references, registry authentication and the registry client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_registry::RegistryError> {
//! use kiln_registry::{Platform, Reference, RegistryClient, RegistryConfig};
//! let client = RegistryClient::new(RegistryConfig::default())?;
//! let r = Reference::parse("localhost:5000/library/busybox")?;
//! let image = client.resolve(&r, &Platform::host()).await?;
//! for layer in &image.layers {
//!     let _stream = client.fetch_blob_verified(&r, layer).await?;
//! }
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod digest;
pub mod error;
pub mod hosts;
pub mod oci;
pub mod platform;
pub mod reference;

pub use auth::{
    CredentialHelper, CredentialProvider, Credentials, CredentialsError, DockerConfig,
    DockerConfigCredentials, HelperLauncher, StaticCredentials,
};
pub use client::{
    BlobPushed, BlobSource, BlobStream, FetchedManifest, ProgressFn, PushBlob, PushOptions,
    PushedImage, RegistryClient, RegistryConfig, ResolvedImage,
};
pub use digest::{Digest, DigestError, Verifier};
pub use error::{ErrorContext, Operation, RegistryError, Result};
pub use oci::{media_type, Descriptor, Index, Manifest};
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};
