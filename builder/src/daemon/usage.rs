//! `kiln du` and `kiln prune` through kilnd: the `DiskUsage` and `Prune` calls, and usage
//! records on the wire. Both look at the daemon's kept build contexts too.

use std::sync::Arc;

use tonic::Status;

use super::proto;
use super::service::Daemon;
use crate::gc::{self, PrunePolicy, PruneReport, RecordType, Stores, UsageRecord};

pub fn record_to_wire(r: UsageRecord) -> proto::UsageRecord {
    proto::UsageRecord {
        id: r.id,
        record_type: r.record_type.as_str().to_string(),
        size: r.size,
        created: r.created,
        last_used: r.last_used,
        description: r.description,
        parent: r.parent,
        in_use: r.in_use,
        shared: r.shared,
    }
}

pub fn record_from_wire(r: proto::UsageRecord) -> UsageRecord {
    UsageRecord {
        record_type: RecordType::parse(&r.record_type).unwrap_or(RecordType::Regular),
        id: r.id,
        size: r.size,
        created: r.created,
        last_used: r.last_used,
        description: r.description,
        parent: r.parent,
        in_use: r.in_use,
        shared: r.shared,
    }
}

pub fn report_from_wire(r: proto::PruneResponse) -> PruneReport {
    PruneReport {
        removed: r.removed.into_iter().map(record_from_wire).collect(),
        freed: r.freed,
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

pub async fn disk_usage(
    daemon: Arc<Daemon>,
    req: proto::DiskUsageRequest,
) -> Result<proto::DiskUsageResponse, Status> {
    let (filters, until) =
        gc::parse_filters(&req.filters).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if until.is_some() {
        return Err(Status::invalid_argument("the until filter is for prune"));
    }
    // Read-only: safe beside running builds.
    let records = tokio::task::spawn_blocking(move || {
        let stores = Stores::of(&daemon.engine).with_contexts(&daemon.contexts);
        gc::disk_usage(&stores, &filters)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(proto::DiskUsageResponse {
        records: records.into_iter().map(record_to_wire).collect(),
    })
}

pub async fn prune(
    daemon: Arc<Daemon>,
    req: proto::PruneRequest,
) -> Result<proto::PruneResponse, Status> {
    let (filters, keep_duration) =
        gc::parse_filters(&req.filters).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let policy = PrunePolicy {
        all: req.all,
        keep_storage: req.keep_storage,
        keep_duration,
        filters,
    };
    // As the embedded prune: waits for running builds, and new builds wait for it.
    let held = daemon.gc.gate.collect().await;
    let begun = std::time::Instant::now();
    let d = daemon.clone();
    let report = tokio::task::spawn_blocking(move || {
        // Held until the prune is over, even if the client goes away meanwhile.
        let _held = held;
        let stores = Stores::of(&d.engine).with_contexts(&d.contexts);
        gc::prune(&stores, &policy)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    tracing::info!(
        removed = report.removed.len(),
        freed = report.freed,
        secs = begun.elapsed().as_secs_f64(),
        "pruned on request"
    );
    Ok(proto::PruneResponse {
        removed: report.removed.into_iter().map(record_to_wire).collect(),
        freed: report.freed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_wire() {
        let r = UsageRecord {
            id: "ctx-0123456789ab-0".into(),
            record_type: RecordType::LocalSource,
            size: 5,
            created: 1,
            last_used: 2,
            description: "local source for context /src".into(),
            parent: Some("snap-1".into()),
            in_use: true,
            shared: false,
        };
        assert_eq!(record_from_wire(record_to_wire(r.clone())), r);
        for t in [
            RecordType::Regular,
            RecordType::CacheMount,
            RecordType::LocalSource,
        ] {
            assert_eq!(RecordType::parse(t.as_str()), Some(t));
        }
    }
}
