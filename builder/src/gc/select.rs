//! Which records a prune removes, and in what order, as BuildKit's cache manager decides:
//! never what is in use, what tagged images share only with `all`, nothing used within the
//! keep duration, only what the filters match, a record only after what is built on it;
//! with a storage limit, the least recently used first, one at a time, until what is left
//! fits.

use super::census::Unit;
use super::{filter, PrunePolicy};

/// Indices into `units`, in removal order; `gone` marks units already removed (by an
/// earlier policy of the same prune).
pub(super) fn select(units: &[Unit], policy: &PrunePolicy, now: i64, gone: &[bool]) -> Vec<usize> {
    let cutoff = policy
        .keep_duration
        .map(|d| now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    let eligible: Vec<bool> = units
        .iter()
        .map(|u| {
            let r = &u.record;
            !r.in_use
                && (policy.all || !r.shared)
                && cutoff.is_none_or(|c| r.last_used < c)
                && filter::all_match(&policy.filters, r)
        })
        .collect();
    let mut gone: Vec<bool> = (0..units.len())
        .map(|i| gone.get(i).copied().unwrap_or(false))
        .collect();
    // Built-on counts: a record goes only once nothing left is built on it.
    let mut children = vec![0usize; units.len()];
    for (i, u) in units.iter().enumerate() {
        if let (Some(p), false) = (u.parent, gone[i]) {
            children[p] += 1;
        }
    }
    let mut order = Vec::new();
    // As BuildKit counts it: what is not shared with images.
    let mut total: u64 = units
        .iter()
        .zip(&gone)
        .filter(|(u, g)| !u.record.shared && !**g)
        .map(|(u, _)| u.record.size)
        .sum();
    loop {
        let mut ready: Vec<usize> = (0..units.len())
            .filter(|&i| eligible[i] && !gone[i] && children[i] == 0)
            .collect();
        if ready.is_empty() {
            break;
        }
        if policy.keep_storage > 0 {
            if total <= policy.keep_storage {
                break;
            }
            ready.sort_by_key(|&i| (units[i].record.last_used, units[i].record.created, i));
            ready.truncate(1);
        }
        for i in ready {
            gone[i] = true;
            order.push(i);
            if !units[i].record.shared {
                total = total.saturating_sub(units[i].record.size);
            }
            if let Some(p) = units[i].parent {
                children[p] -= 1;
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::census::Part;
    use super::super::{Filter, RecordType, UsageRecord};
    use super::*;

    fn unit(id: &str, size: u64, last_used: i64, parent: Option<usize>) -> Unit {
        Unit {
            record: UsageRecord {
                id: id.into(),
                record_type: RecordType::Regular,
                size,
                created: last_used,
                last_used,
                description: String::new(),
                parent: None,
                in_use: false,
                shared: false,
            },
            part: Part::Content { blobs: vec![] },
            parent,
        }
    }

    fn ids(units: &[Unit], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| units[i].record.id.clone()).collect()
    }

    #[test]
    fn children_first_and_protection() {
        let mut units = vec![
            unit("base", 10, 100, None),
            unit("step", 10, 200, Some(0)),
            unit("image", 10, 300, None),
            unit("needed", 10, 50, None),
        ];
        units[2].record.shared = true;
        units[3].record.in_use = true;
        let p = PrunePolicy::default();
        assert_eq!(
            ids(&units, &select(&units, &p, 1000, &[])),
            ["step", "base"]
        );
        let all = PrunePolicy {
            all: true,
            ..Default::default()
        };
        assert_eq!(
            ids(&units, &select(&units, &all, 1000, &[])),
            ["step", "image", "base"]
        );
    }

    #[test]
    fn keep_duration_and_filters() {
        let units = vec![
            unit("old", 10, 100, None),
            unit("new", 10, 950, None),
            unit("old-parent", 10, 90, None),
            unit("new-child", 10, 960, Some(2)),
        ];
        let p = PrunePolicy {
            keep_duration: Some(Duration::from_secs(100)),
            ..Default::default()
        };
        // The old parent stays: something recent is built on it.
        assert_eq!(ids(&units, &select(&units, &p, 1000, &[])), ["old"]);
        let p = PrunePolicy {
            filters: vec![Filter::parse("id=^new").unwrap()],
            ..Default::default()
        };
        assert_eq!(
            ids(&units, &select(&units, &p, 1000, &[])),
            ["new", "new-child"]
        );
    }

    #[test]
    fn keep_storage_removes_least_recently_used_until_it_fits() {
        let units = vec![
            unit("a", 100, 300, None),
            unit("b", 100, 100, None),
            unit("c", 100, 200, None),
            unit("d", 100, 400, None),
        ];
        let p = PrunePolicy {
            keep_storage: 250,
            ..Default::default()
        };
        assert_eq!(ids(&units, &select(&units, &p, 1000, &[])), ["b", "c"]);
        let p = PrunePolicy {
            keep_storage: 1000,
            ..Default::default()
        };
        assert!(select(&units, &p, 1000, &[]).is_empty());
    }

    #[test]
    fn what_an_earlier_policy_removed_is_not_counted_or_selected_again() {
        let units = vec![
            unit("base", 100, 100, None),
            unit("child", 100, 200, Some(0)),
            unit("other", 100, 300, None),
        ];
        // The age pass took the child: the base is free to go, and the size pass counts
        // 200 bytes, not 300.
        let gone = [false, true, false];
        let p = PrunePolicy {
            keep_storage: 150,
            ..Default::default()
        };
        assert_eq!(ids(&units, &select(&units, &p, 1000, &gone)), ["base"]);
    }
}
