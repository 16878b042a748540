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
    let mut x = Exposition { out };
    render_tunnels(&mut x, &services);
    render_handshakes(&mut x, &services);
    x.family(
        "moat_plaintext_bytes_total",
        "counter",
        "Plaintext bytes relayed, by direction.",
    );
    for (name, all) in &services {
        x.tally(name, "moat_plaintext_bytes_total", all, |s| {
            &s.plaintext_bytes
        });
    }
    x.family(
        "moat_timeouts_total",
        "counter",
        "Deadlines that fired, by kind.",
    );
    for (name, all) in &services {
        x.tally(name, "moat_timeouts_total", all, |s| &s.timeouts);
    }
    render_loops(&mut x, loops);
    render_process(&mut x, process);
}

fn render_tunnels(x: &mut Exposition<'_>, services: &Services) {
    x.family("moat_tunnels_open", "gauge", "Tunnels open now.");
    for (name, all) in services {
        let open = all
            .iter()
            .map(|s| s.tunnels_open.get())
            .fold(0, i64::saturating_add);
        x.sample("moat_tunnels_open", &[("service", name)], open);
    }
    x.family("moat_tunnels_opened_total", "counter", "Tunnels opened.");
    for (name, all) in services {
        let opened = sum(all.iter().map(|s| s.tunnels_opened.get()));
        x.sample("moat_tunnels_opened_total", &[("service", name)], opened);
    }
    x.family(
        "moat_tunnels_closed_total",
        "counter",
        "Tunnels closed, by how they ended.",
    );
    for (name, all) in services {
        x.tally(name, "moat_tunnels_closed_total", all, |s| {
            &s.tunnels_closed
        });
    }
}

fn render_handshakes(x: &mut Exposition<'_>, services: &Services) {
    x.family(
        "moat_handshakes_total",
        "counter",
        "TLS handshakes completed.",
    );
    for (name, all) in services {
        let done = sum(all.iter().map(|s| s.handshakes.get()));
        x.sample("moat_handshakes_total", &[("service", name)], done);
    }
    x.family(
        "moat_handshake_failures_total",
        "counter",
        "TLS handshakes failed, by reason.",
    );
    for (name, all) in services {
        x.tally(name, "moat_handshake_failures_total", all, |s| {
            &s.handshake_failures
        });
    }
    x.family(
        "moat_handshakes_resumed_total",
        "counter",
        "TLS handshakes completed by resuming a session.",
    );
    for (name, all) in services {
        let resumed = sum(all.iter().map(|s| s.handshakes_resumed.get()));
        x.sample(
            "moat_handshakes_resumed_total",
            &[("service", name)],
            resumed,
        );
    }
    x.family(
        "moat_handshake_duration_seconds",
        "histogram",
        "Time from accept or connect to a completed TLS handshake.",
    );
    for (name, all) in services {
        x.histogram(name, "moat_handshake_duration_seconds", all);
    }
    x.family(
        "moat_handshake_versions_total",
        "counter",
        "TLS handshakes completed, by protocol version.",
    );
    for (name, all) in services {
        x.tally(name, "moat_handshake_versions_total", all, |s| &s.versions);
    }
    x.family(
        "moat_handshake_suites_total",
        "counter",
        "TLS handshakes completed, by cipher suite.",
    );
    for (name, all) in services {
        x.tally(name, "moat_handshake_suites_total", all, |s| &s.suites);
    }
    x.family(
        "moat_handshake_groups_total",
        "counter",
        "TLS handshakes completed, by key-exchange group.",
    );
    for (name, all) in services {
        x.tally(name, "moat_handshake_groups_total", all, |s| &s.groups);
    }
    x.family(
        "moat_handshake_alpn_total",
        "counter",
        "TLS handshakes completed with an ALPN protocol, by protocol.",
    );
    for (name, all) in services {
        x.alpn(name, all);
    }
}

fn render_loops(x: &mut Exposition<'_>, loops: &[Arc<LoopMetrics>]) {
    x.family(
        "moat_refusals_total",
        "counter",
        "Connections refused or held off, by the cap that did it.",
    );
    x.summed_tally(
        "moat_refusals_total",
        loops.iter().map(|l| &l.refusals),
        &[],
    );
    x.family(
        "moat_accept_pauses_total",
        "counter",
        "Times accepting paused after an accept error such as running out of descriptors.",
    );
    let pauses = sum(loops.iter().map(|l| l.accept_pauses.get()));
    x.sample("moat_accept_pauses_total", &[], pauses);
    x.family(
        "moat_buffers_in_use",
        "gauge",
        "Relay buffers lent to tunnels.",
    );
    let in_use = loops
        .iter()
        .map(|l| l.buffers_in_use.get())
        .fold(0, i64::saturating_add);
    x.sample("moat_buffers_in_use", &[], in_use);
    x.family(
        "moat_buffers_spare",
        "gauge",
        "Relay buffers kept for reuse.",
    );
    let spare = loops
        .iter()
        .map(|l| l.buffers_spare.get())
        .fold(0, i64::saturating_add);
    x.sample("moat_buffers_spare", &[], spare);
}

fn render_process(x: &mut Exposition<'_>, process: &ProcessMetrics) {
    x.family(
        "moat_config_reloads_total",
        "counter",
        "Configuration reloads, by result.",
    );
    x.summed_tally("moat_config_reloads_total", [&process.reloads], &[]);
    x.family(
        "moat_config_last_reload_success_timestamp_seconds",
        "gauge",
        "Unix time the configuration in force was loaded (start-up or the last good reload).",
    );
    x.sample(
        "moat_config_last_reload_success_timestamp_seconds",
        &[],
        process.last_reload_success.get(),
    );
    x.family(
        "moat_log_lines_dropped_total",
        "counter",
        "Log lines dropped because standard error could not keep up.",
    );
    x.sample(
        "moat_log_lines_dropped_total",
        &[],
        process.log_lines_dropped.get(),
    );
}

fn sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
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

    /// A service's tally, summed over its loops, one series per label value.
    fn tally<L: Label>(
        &mut self,
        service: &str,
        name: &str,
        all: &[Arc<ServiceMetrics>],
        tally: impl Fn(&ServiceMetrics) -> &Tally<L>,
    ) {
        let tallies = all.iter().map(|s| tally(s));
        self.summed_tally(name, tallies, &[("service", service)]);
    }

    /// Tallies summed slot by slot, each series with `labels` before the tally's own label.
    fn summed_tally<'t, L: Label>(
        &mut self,
        name: &str,
        tallies: impl IntoIterator<Item = &'t Tally<L>>,
        labels: &[(&str, &str)],
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

    /// A service's ALPN counts summed by protocol name (loops may have given a name
    /// different slots), names in byte order, `other` last.
    fn alpn(&mut self, service: &str, all: &[Arc<ServiceMetrics>]) {
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
            self.sample("moat_handshake_alpn_total", &labels, count);
        }
    }

    /// A service's histogram summed over its loops: cumulative buckets up to `+Inf`, then
    /// `_sum` in seconds and `_count`.
    fn histogram(&mut self, service: &str, name: &str, all: &[Arc<ServiceMetrics>]) {
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
