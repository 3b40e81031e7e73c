//! `kiln du` and `kiln prune` through kilnd.

use super::ClientError;
use crate::daemon::proto::{DiskUsageRequest, PruneRequest};
use crate::daemon::usage::{record_from_wire, report_from_wire};
use crate::gc::{PruneReport, UsageRecord};

pub async fn disk_usage(addr: &str, filters: Vec<String>) -> Result<Vec<UsageRecord>, ClientError> {
    let mut c = super::connect(addr).await?;
    let resp = c.disk_usage(DiskUsageRequest { filters }).await?;
    Ok(resp
        .into_inner()
        .records
        .into_iter()
        .map(record_from_wire)
        .collect())
}

pub async fn prune(addr: &str, req: PruneRequest) -> Result<PruneReport, ClientError> {
    let mut c = super::connect(addr).await?;
    Ok(report_from_wire(c.prune(req).await?.into_inner()))
}
