//! The metrics as a Prometheus text exposition (format 0.0.4), summed over every loop.
//!
//! The format is small: per metric family a `# HELP` and a `# TYPE` line, then one
//! `name{label="value",...} number` line per series, `\n` line endings. Label values escape
//! backslash, double quote and line feed; help text escapes backslash and line feed.
//! Families come in a fixed order, services by name, label values in their declared
//! order, so two scrapes of the same state are byte-identical.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::sync::Arc;

use super::instrument::{Histogram, Label, Tally};
use super::{LoopMetrics, ProcessMetrics, ServiceMetrics};

/// The `Content-Type` of a rendered exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Each service's metrics on every loop, by service name.
type Services = BTreeMap<String, Vec<Arc<ServiceMetrics>>>;

/// Appends the exposition of `process` and of all `loops`, summed, to `out`.
///
/// Runs on whichever loop serves the status request; it reads atomics and takes each loop's
/// service-table lock just long enough to copy the table.
pub fn render(process: &ProcessMetrics, loops: &[Arc<LoopMetrics>], out: &mut String) {
    let mut services = Services::new();
    for each in loops {
        for (name, metrics) in each.services() {
            services.entry(name).or_default().push(metrics);
        }
    }
    let s = &services;
    let mut x = Exposition { out };
    // Per service.
    x.gauge_per_service(s, "moat_tunnels_open", "Tunnels open now.", |m| {
        m.tunnels_open.get()
    });
    x.counter_per_service(s, "moat_tunnels_opened_total", "Tunnels opened.", |m| {
        m.tunnels_opened.get()
    });
    x.tally_per_service(
        s,
        "moat_tunnels_closed_total",
        "Tunnels closed, by how they ended.",
        |m| &m.tunnels_closed,
    );
    x.counter_per_service(
        s,
        "moat_handshakes_total",
        "TLS handshakes completed.",
        |m| m.handshakes.get(),
    );
    x.tally_per_service(
        s,
        "moat_handshake_failures_total",
        "TLS handshakes failed, by reason.",
        |m| &m.handshake_failures,
    );
    x.counter_per_service(
        s,
        "moat_handshakes_resumed_total",
        "TLS handshakes completed by resuming a session.",
        |m| m.handshakes_resumed.get(),
    );
    x.histogram_per_service(
        s,
        "moat_handshake_duration_seconds",
        "Time from accept or connect to a completed TLS handshake.",
    );
    x.tally_per_service(
        s,
        "moat_handshake_versions_total",
        "TLS handshakes completed, by protocol version.",
        |m| &m.versions,
    );
    x.tally_per_service(
        s,
        "moat_handshake_suites_total",
        "TLS handshakes completed, by cipher suite.",
        |m| &m.suites,
    );
    x.tally_per_service(
        s,
        "moat_handshake_groups_total",
        "TLS handshakes completed, by key-exchange group.",
        |m| &m.groups,
    );
    x.alpn_per_service(
        s,
        "moat_handshake_alpn_total",
        "TLS handshakes completed with an ALPN protocol, by protocol.",
    );
    x.tally_per_service(
        s,
        "moat_plaintext_bytes_total",
        "Plaintext bytes relayed, by direction.",
        |m| &m.plaintext_bytes,
    );
    x.tally_per_service(
        s,
        "moat_timeouts_total",
        "Deadlines that fired, by kind.",
        |m| &m.timeouts,
    );
    // Per loop, summed.
    x.tally(
        "moat_refusals_total",
        "Connections refused or held off, by the cap that did it.",
        loops.iter().map(|l| &l.refusals),
    );
    x.counter(
        "moat_accept_pauses_total",
        "Times accepting paused after an accept error such as running out of descriptors.",
        sum(loops.iter().map(|l| l.accept_pauses.get())),
    );
    x.gauge(
        "moat_buffers_in_use",
        "Relay buffers lent to tunnels.",
        sum_signed(loops.iter().map(|l| l.buffers_in_use.get())),
    );
    x.gauge(
        "moat_buffers_spare",
        "Relay buffers kept for reuse.",
        sum_signed(loops.iter().map(|l| l.buffers_spare.get())),
    );
    // Per process.
    x.tally(
        "moat_config_reloads_total",
        "Configuration reloads, by result.",
        [&process.reloads],
    );
    x.gauge(
        "moat_config_last_reload_success_timestamp_seconds",
        "Unix time the configuration in force was loaded (start-up or the last good reload).",
        process.last_reload_success.get(),
    );
    x.counter(
        "moat_log_lines_dropped_total",
        "Log lines dropped because standard error could not keep up.",
        process.log_lines_dropped.get(),
    );
}

fn sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

fn sum_signed(values: impl Iterator<Item = i64>) -> i64 {
    values.fold(0, i64::saturating_add)
}

/// Writes exposition lines into a string.
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    /// The `# HELP` and `# TYPE` lines that open a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    /// One series: `name{labels} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if let Some(((first_name, first_value), rest)) = labels.split_first() {
            self.out.push('{');
            self.label(first_name, first_value);
            for (label, value) in rest {
                self.out.push(',');
                self.label(label, value);
            }
            self.out.push('}');
        }
        // Writing into a String cannot fail.
        let _ = writeln!(self.out, " {value}");
    }

    fn label(&mut self, name: &str, value: &str) {
        self.out.push_str(name);
        self.out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '"' => self.out.push_str("\\\""),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    /// A family of one unlabelled counter.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    /// A family of one unlabelled gauge.
    fn gauge(&mut self, name: &str, help: &str, value: i64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A family of one tally, summed over `tallies` slot by slot.
    fn tally<'t, L: Label>(
        &mut self,
        name: &str,
        help: &str,
        tallies: impl IntoIterator<Item = &'t Tally<L>>,
    ) {
        self.family(name, "counter", help);
        self.summed_tally(name, &[], tallies);
    }

    /// A counter family with a series per service, each summed over the service's loops.
    fn counter_per_service(
        &mut self,
        services: &Services,
        name: &str,
        help: &str,
        value: impl Fn(&ServiceMetrics) -> u64,
    ) {
        self.family(name, "counter", help);
        for (service, all) in services {
            let total = sum(all.iter().map(|m| value(m)));
            self.sample(name, &[("service", service)], total);
        }
    }

    /// A gauge family with a series per service, each summed over the service's loops.
    fn gauge_per_service(
        &mut self,
        services: &Services,
        name: &str,
        help: &str,
        value: impl Fn(&ServiceMetrics) -> i64,
    ) {
        self.family(name, "gauge", help);
        for (service, all) in services {
            let total = sum_signed(all.iter().map(|m| value(m)));
            self.sample(name, &[("service", service)], total);
        }
    }

    /// A counter family with a series per service and label value.
    fn tally_per_service<L: Label>(
        &mut self,
        services: &Services,
        name: &str,
        help: &str,
        tally: impl Fn(&ServiceMetrics) -> &Tally<L>,
    ) {
        self.family(name, "counter", help);
        for (service, all) in services {
            let tallies = all.iter().map(|m| tally(m));
            self.summed_tally(name, &[("service", service)], tallies);
        }
    }

    /// Tallies summed slot by slot, each series with `labels` before the tally's own label.
    fn summed_tally<'t, L: Label>(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        tallies: impl IntoIterator<Item = &'t Tally<L>>,
    ) {
        let mut sums = vec![0u64; L::SLOTS];
        for tally in tallies {
            for (total, (_, count)) in sums.iter_mut().zip(tally.counts()) {
                *total = total.saturating_add(count);
            }
        }
        for (slot, total) in sums.into_iter().enumerate() {
            let mut all_labels = labels.to_vec();
            all_labels.push((L::NAME, L::slot_label(slot)));
            self.sample(name, &all_labels, total);
        }
    }

    /// The ALPN family: per service, counts summed by protocol name (loops may have given
    /// a name different slots), names in byte order, `other` last.
    fn alpn_per_service(&mut self, services: &Services, name: &str, help: &str) {
        self.family(name, "counter", help);
        for (service, all) in services {
            self.alpn(name, service, all);
        }
    }

    /// The histogram family: per service, cumulative buckets up to `+Inf`, then `_sum` in
    /// seconds and `_count`, summed over the service's loops.
    fn histogram_per_service(&mut self, services: &Services, name: &str, help: &str) {
        self.family(name, "histogram", help);
        for (service, all) in services {
            self.histogram(name, service, all);
        }
    }

    fn alpn(&mut self, name: &str, service: &str, all: &[Arc<ServiceMetrics>]) {
        let mut named: BTreeMap<&[u8], u64> = BTreeMap::new();
        let mut other = 0u64;
        for metrics in all {
            let mut counts: Vec<(&[u8], u64)> = metrics.alpn.counts().collect();
            if let Some((_, count)) = counts.pop() {
                other = other.saturating_add(count);
            }
            for (protocol, count) in counts {
                let total = named.entry(protocol).or_default();
                *total = total.saturating_add(count);
            }
        }
        let other_label: &[u8] = super::labels::OTHER.as_bytes();
        for (protocol, count) in named.into_iter().chain([(other_label, other)]) {
            let protocol: Cow<'_, str> = String::from_utf8_lossy(protocol);
            let labels = [("service", service), ("protocol", &*protocol)];
            self.sample(name, &labels, count);
        }
    }

    fn histogram(&mut self, name: &str, service: &str, all: &[Arc<ServiceMetrics>]) {
        let histograms: Vec<&Histogram> = all.iter().map(|s| &s.handshake_duration).collect();
        let Some(first) = histograms.first() else {
            return;
        };
        let bounds = first.bounds();
        let mut slots = vec![0u64; bounds.len() + 1];
        let mut sum_micros = 0u64;
        for histogram in &histograms {
            for (total, count) in slots.iter_mut().zip(histogram.slot_counts()) {
                *total = total.saturating_add(count);
            }
            sum_micros = sum_micros.saturating_add(histogram.sum_micros());
        }
        let bucket = format!("{name}_bucket");
        let les = bounds.iter().map(|b| b.le).chain(["+Inf"]);
        let mut cumulative = 0u64;
        for (le, count) in les.zip(&slots) {
            cumulative = cumulative.saturating_add(*count);
            self.sample(&bucket, &[("service", service), ("le", le)], cumulative);
        }
        let seconds = sum_micros as f64 / 1e6;
        self.sample(&format!("{name}_sum"), &[("service", service)], seconds);
        self.sample(
            &format!("{name}_count"),
            &[("service", service)],
            cumulative,
        );
    }
}
