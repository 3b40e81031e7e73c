//! A connection to containerd for one namespace: the gRPC channel, the `containerd-namespace`
//! and `containerd-lease` headers on every request, the namespace itself and the lease.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::{
    CreateNamespaceRequest, CreateRequest, DeleteRequest, GetNamespaceRequest, Namespace,
};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use super::error::{connect_error, validate_namespace, ContainerdError};

/// How long an export's lease outlives a kiln that dies mid-export: containerd's GC then
/// collects what it had written.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
pub(crate) struct Conn {
    pub channel: Channel,
    pub socket: String,
    pub namespace: String,
    ns_header: MetadataValue<containerd_client::tonic::metadata::Ascii>,
    lease: Option<MetadataValue<containerd_client::tonic::metadata::Ascii>>,
}

impl Conn {
    /// Connects to `socket` for `namespace` (validated here, created later by
    /// [`Conn::ensure_namespace`]).
    pub async fn connect(socket: &str, namespace: &str) -> Result<Conn, ContainerdError> {
        validate_namespace(namespace)?;
        let ns_header = namespace
            .parse()
            .map_err(|_| ContainerdError::BadNamespace {
                namespace: namespace.to_string(),
                why: "not a valid header value".into(),
            })?;
        // tonic reports a failed dial as an opaque transport error; dialling once ourselves
        // tells "not running" from "permission denied".
        tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| connect_error(socket, e))?;
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|e| ContainerdError::Connect {
                    socket: socket.to_string(),
                    msg: e.to_string(),
                })?;
        tracing::debug!(socket, namespace, "connected to containerd");
        Ok(Conn {
            channel,
            socket: socket.to_string(),
            namespace: namespace.to_string(),
            ns_header,
            lease: None,
        })
    }

    /// `msg` with the namespace header, and the lease header while a lease is held.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert("containerd-namespace", self.ns_header.clone());
        if let Some(l) = &self.lease {
            md.insert("containerd-lease", l.clone());
        }
        r
    }

    /// A typed error for a failed call `op` on `what`.
    pub fn rpc(
        &self,
        op: &'static str,
        what: impl Into<String>,
        status: Status,
    ) -> ContainerdError {
        ContainerdError::Rpc {
            socket: self.socket.clone(),
            namespace: self.namespace.clone(),
            op,
            what: what.into(),
            status: Box::new(status),
        }
    }

    /// Creates the namespace unless it exists (kubelet's `k8s.io` may not yet, on a node
    /// where nothing ran).
    pub async fn ensure_namespace(&self) -> Result<(), ContainerdError> {
        let mut ns = NamespacesClient::new(self.channel.clone());
        let get = GetNamespaceRequest {
            name: self.namespace.clone(),
        };
        match ns.get(Request::new(get)).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(self.rpc("Namespaces.Get", &self.namespace, s)),
        }
        let create = CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: self.namespace.clone(),
                labels: HashMap::new(),
            }),
        };
        match ns.create(Request::new(create)).await {
            Ok(_) => {
                tracing::info!(namespace = %self.namespace, "created containerd namespace");
                Ok(())
            }
            // Someone else made it meanwhile.
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) if s.code() == Code::InvalidArgument => Err(ContainerdError::BadNamespace {
                namespace: self.namespace.clone(),
                why: s.message().to_string(),
            }),
            Err(s) => Err(self.rpc("Namespaces.Create", &self.namespace, s)),
        }
    }

    /// Takes a lease: everything written from now on is kept from GC until
    /// [`Conn::release`], even before an image references it.
    pub async fn lease(&mut self) -> Result<String, ContainerdError> {
        let id = format!("kiln-export-{}", unique());
        let expire = chrono::Utc::now()
            + chrono::Duration::from_std(LEASE_EXPIRY).unwrap_or(chrono::Duration::hours(24));
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )]);
        let mut leases = LeasesClient::new(self.channel.clone());
        leases
            .create(self.req(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| self.rpc("Leases.Create", &id, s))?;
        self.lease = Some(id.parse().map_err(|_| ContainerdError::Connect {
            socket: self.socket.clone(),
            msg: format!("lease id {id} is not a header value"),
        })?);
        tracing::debug!(lease = %id, "took a containerd lease");
        Ok(id)
    }

    /// Holds the long-lived lease `id` (made unless it exists, with no expiry): what kiln's
    /// containerd worker keeps (base images, build snapshots) must survive containerd's GC
    /// though no image references it yet.
    pub async fn hold_lease(&mut self, id: &str) -> Result<(), ContainerdError> {
        let mut leases = LeasesClient::new(self.channel.clone());
        let made = leases
            .create(self.req(CreateRequest {
                id: id.to_string(),
                labels: HashMap::new(),
            }))
            .await;
        match made {
            Ok(_) => tracing::info!(lease = %id, "created containerd lease"),
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(self.rpc("Leases.Create", id, s)),
        }
        self.lease = Some(id.parse().map_err(|_| ContainerdError::Connect {
            socket: self.socket.clone(),
            msg: format!("lease id {id} is not a header value"),
        })?);
        Ok(())
    }

    /// Drops the lease. `sync`: wait for containerd's GC, so what only the lease held (a
    /// failed export's blobs and snapshots) is gone when this returns.
    pub async fn release(&mut self, id: &str, sync: bool) -> Result<(), ContainerdError> {
        self.lease = None;
        let mut leases = LeasesClient::new(self.channel.clone());
        leases
            .delete(self.req(DeleteRequest {
                id: id.to_string(),
                sync,
            }))
            .await
            .map_err(|s| self.rpc("Leases.Delete", id, s))?;
        tracing::debug!(lease = %id, sync, "released the containerd lease");
        Ok(())
    }
}

/// A name no other export picks: time, pid and a counter.
pub(crate) fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
