//! Counting a stage's requests by what object stores bill for them.
//!
//! Every [`Stage`](crate::Stage) operation is one request (a listing one
//! per page of up to 1,000 keys, as S3 pages them), counted whether or not
//! it succeeds, since a failed request is billed too. The services publish
//! the counts as `strata_stage_requests_total{op}`, and
//! [`RequestCounts::list_price_usd`] turns them into dollars at S3's list
//! price, so what a deployment costs in requests can be read off its
//! metrics rather than its bill.

use strata_common::telemetry::{Registry, Value};

/// The kinds of request, as S3 prices them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// PUT of an object, conditional or not.
    Put,
    /// GET of an object (found or not).
    Get,
    /// HEAD of an object.
    Head,
    /// One page of a listing.
    List,
    /// DELETE (free on S3).
    Delete,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Put, Op::Get, Op::Head, Op::List, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }

    /// S3 Standard's list price per 1,000 requests in us-east-1 (PUT, COPY,
    /// POST and LIST $0.005; GET and HEAD $0.0004; DELETE free).
    pub fn usd_per_thousand(self) -> f64 {
        match self {
            Op::Put | Op::List => 0.005,
            Op::Get | Op::Head => 0.0004,
            Op::Delete => 0.0,
        }
    }
}

/// Requests made through one [`Stage`](crate::Stage) handle and its clones.
#[derive(Clone, Default)]
pub struct RequestCounts {
    counts: [Value; 5],
}

impl std::fmt::Debug for RequestCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RequestCounts");
        for op in Op::ALL {
            d.field(op.name(), &self.get(op));
        }
        d.finish()
    }
}

impl RequestCounts {
    pub(crate) fn add(&self, op: Op, n: u64) {
        self.counts[op as usize].inc_by(n);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.counts[op as usize].count()
    }

    pub fn total(&self) -> u64 {
        Op::ALL.iter().map(|&op| self.get(op)).sum()
    }

    /// What these requests cost at S3's list price.
    pub fn list_price_usd(&self) -> f64 {
        Op::ALL.iter().map(|&op| self.get(op) as f64 * op.usd_per_thousand() / 1000.0).sum()
    }

    /// Publishes the counts as `strata_stage_requests_total{op}`.
    pub fn register(&self, registry: &Registry) {
        for op in Op::ALL {
            registry.register_counter(
                "strata_stage_requests_total",
                "Requests made to the stage's object store, by kind (a listing counts one per page of 1,000 keys).",
                &[("op", op.name())],
                &self.counts[op as usize],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_price_weighs_each_kind() {
        let r = RequestCounts::default();
        r.add(Op::Put, 1000);
        r.add(Op::Get, 1000);
        r.add(Op::Delete, 5000);
        assert_eq!(r.total(), 7000);
        assert!((r.list_price_usd() - 0.0054).abs() < 1e-12, "{}", r.list_price_usd());
        let registry = Registry::default();
        r.register(&registry);
        r.add(Op::Head, 3);
        let text = registry.render();
        assert!(text.contains("strata_stage_requests_total{op=\"put\"} 1000"), "{text}");
        assert!(text.contains("strata_stage_requests_total{op=\"head\"} 3"), "registered counts stay live: {text}");
    }
}
