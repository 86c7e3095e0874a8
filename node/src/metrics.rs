//! Counters the node exposes at `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::adverts::AdvertRejection;

#[derive(Debug, Default)]
pub struct Metrics {
    pub adverts_accepted: AtomicU64,
    pub adverts_published: AdvertCounter,
    pub adverts_expired: AtomicU64,
    rejected: [AtomicU64; AdvertRejection::CODES.len()],
    pub adverts_from_unadmitted: AtomicU64,
    pub requests_in: AtomicU64,
    pub peers_admitted: AtomicU64,
    pub peers_refused: AtomicU64,
    pub ledger_appends: AtomicU64,
    pub ledger_append_errors: AtomicU64,
    pub api_requests: AtomicU64,
    pub api_errors: AtomicU64,
}

pub type AdvertCounter = AtomicU64;

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reject(&self, reason: &AdvertRejection) {
        let i = AdvertRejection::CODES
            .iter()
            .position(|c| *c == reason.code())
            .expect("every rejection has a code");
        Self::inc(&self.rejected[i]);
    }

    pub fn rejected(&self, code: &str) -> u64 {
        AdvertRejection::CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    /// Renders every counter plus the given gauges.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "fairgrid_adverts_accepted_total",
            "Adverts from other nodes that passed validation.",
            get(&self.adverts_accepted),
        );
        counter(
            "fairgrid_adverts_published_total",
            "Adverts this node signed and published.",
            get(&self.adverts_published),
        );
        counter(
            "fairgrid_adverts_expired_total",
            "Adverts dropped from the live table at expiry.",
            get(&self.adverts_expired),
        );
        counter(
            "fairgrid_adverts_from_unadmitted_total",
            "Adverts relayed by peers not (yet) admitted in consortium mode.",
            get(&self.adverts_from_unadmitted),
        );
        counter(
            "fairgrid_requests_in_total",
            "Inbound request-response requests.",
            get(&self.requests_in),
        );
        counter(
            "fairgrid_peers_admitted_total",
            "Peers admitted after the certificate handshake.",
            get(&self.peers_admitted),
        );
        counter(
            "fairgrid_peers_refused_total",
            "Peers refused and disconnected.",
            get(&self.peers_refused),
        );
        counter(
            "fairgrid_ledger_appends_total",
            "Ledger entries appended and flushed.",
            get(&self.ledger_appends),
        );
        counter(
            "fairgrid_ledger_append_errors_total",
            "Ledger appends that failed.",
            get(&self.ledger_append_errors),
        );
        counter(
            "fairgrid_api_requests_total",
            "HTTP API requests.",
            get(&self.api_requests),
        );
        counter(
            "fairgrid_api_errors_total",
            "HTTP API requests answered with an error.",
            get(&self.api_errors),
        );
        let _ = writeln!(
            out,
            "# HELP fairgrid_adverts_rejected_total Adverts refused, by reason.\n# TYPE fairgrid_adverts_rejected_total counter"
        );
        for (code, value) in AdvertRejection::CODES.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "fairgrid_adverts_rejected_total{{reason=\"{code}\"}} {}",
                get(value)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}
