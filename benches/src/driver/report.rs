//! The results table: one row per (scenario, target), printed as text and written as
//! markdown.

use super::scenario::{FigureKind, Measured, Pairing, Scenario};
use super::targets::Kind;

/// Above this share a CPU (or the target process) counts as saturated.
const SATURATED_PCT: f64 = 90.0;

/// Load from processes outside the benchmark worth calling out, in percent of a CPU.
pub const FOREIGN_LOAD_PCT: f64 = 5.0;

/// One measured (scenario, target) pair.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: Scenario,
    pub target: Kind,
    /// `None` when the run failed; `error` then says why.
    pub measured: Option<Measured>,
    pub error: Option<String>,
}

impl Row {
    fn kind(&self) -> FigureKind {
        self.scenario.kind
    }

    /// Whether the run was skipped on purpose (see `not_run`) rather than failed.
    pub fn skipped(&self) -> bool {
        self.measured.is_none()
            && self
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("not run"))
    }

    /// The per-target-CPU-second figure (or KiB/tunnel for memory).
    pub fn per_cpu(&self) -> Option<f64> {
        self.measured.as_ref().map(|m| m.per_cpu(self.kind()))
    }

    /// Which side bounded the figure: the CPU that was (nearly) always busy. CPU 0 runs the
    /// target, CPU 1 the generator and the backend; both include the softirq time that the
    /// loopback network path spends on them.
    fn bound(&self, m: &Measured) -> &'static str {
        let target = m.cpu_busy_pct(0) >= SATURATED_PCT || m.target_cpu_pct() >= SATURATED_PCT;
        let generator = m.cpu_busy_pct(1) >= SATURATED_PCT;
        if self.kind() == FigureKind::MemoryPerTunnel {
            "-"
        } else if target && generator {
            "both"
        } else if target {
            "target"
        } else if generator {
            "generator"
        } else {
            "neither"
        }
    }

    /// The median run of the same target in the scenario called `name`, if it ran.
    fn sibling<'a>(&self, rows: &'a [Row], name: &str) -> Option<&'a Measured> {
        rows.iter()
            .find(|r| r.scenario.name == name && r.target == self.target)
            .and_then(|r| r.measured.as_ref())
    }

    /// This row's figure read against its paired scenario's, same target, same run.
    fn pairing_note(&self, m: &Measured, rows: &[Row]) -> Option<String> {
        let pairing = self.scenario.pairing?;
        let other_name = pairing.with();
        let Some(other) = self.sibling(rows, other_name) else {
            return Some(format!("run {other_name} too for the ratio"));
        };
        let ratio = pairing.ratio(m, other)?;
        Some(match pairing {
            Pairing::CostPerHandshake(_) => format!(
                "target CPU per handshake {ratio:.2}× {other_name}'s ({:.0} vs {:.0} µs)",
                per_handshake_us(m),
                per_handshake_us(other)
            ),
            Pairing::P99(_) => format!(
                "p99 {ratio:.2}× {other_name}'s ({:.0} vs {:.0} µs)",
                m.num("p99_us"),
                other.num("p99_us")
            ),
        })
    }

    fn notes(&self, m: &Measured, rows: &[Row]) -> String {
        let mut notes = Vec::new();
        if self.scenario.resume {
            let ops = m.num("ops");
            let pct = if ops > 0.0 {
                m.num("resumed") * 100.0 / ops
            } else {
                0.0
            };
            notes.push(format!("resumed {pct:.1}%"));
        }
        if self.scenario.mode == "rr" {
            notes.push(format!(
                "p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
                m.num("p50_us"),
                m.num("p99_us"),
                m.num("p999_us")
            ));
        }
        match self.kind() {
            FigureKind::P99Stretch => notes.push(fairness_notes(m)),
            FigureKind::P99BesideIdle => notes.push(beside_idle_notes(m)),
            FigureKind::PctOfUnloaded => notes.push(flood_notes(m)),
            _ => {}
        }
        notes.extend(self.pairing_note(m, rows));
        if self.kind() == FigureKind::MemoryPerTunnel {
            notes.push(format!(
                "{} alive of {}, RSS {:.1} → {:.1} MiB, CPU while idle {:.1}%",
                m.num("alive"),
                self.scenario.tunnels,
                m.num("rss_base_kib") / 1024.0,
                m.num("rss_kib") / 1024.0,
                m.target_cpu_pct()
            ));
        }
        let other = m.num("other_cpu");
        if other >= FOREIGN_LOAD_PCT {
            notes.push(format!(
                "other processes used {other:.0}% of a CPU meanwhile"
            ));
        }
        if m.num("errors") > 0.0 {
            notes.push(format!(
                "{} errors (first: {})",
                m.num("errors"),
                m.text("first_error").unwrap_or("?").replace('_', " ")
            ));
        }
        notes.join("; ")
    }
}

/// An error in one line: its first line, and when the log's tail follows it (`... its log
/// says:`), the tail's last line, which is usually the target's own complaint.
pub fn error_summary(error: &str) -> String {
    let mut lines = error.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    match lines.next_back() {
        Some(last) if first.ends_with(':') => format!("{first} {last}"),
        _ => first.to_string(),
    }
}

/// The target's CPU time per handshake in µs: the inverse of the per-CPU figure.
fn per_handshake_us(m: &Measured) -> f64 {
    let per_cpu = m.per_cpu(FigureKind::Handshakes);
    if per_cpu > 0.0 {
        1e6 / per_cpu
    } else {
        0.0
    }
}

/// What the handshakes negotiated, for the table: `AES_256_GCM_SHA384 X25519`, with the
/// number of handshakes that negotiated something else when there were any.
fn negotiated(m: &Measured) -> String {
    let Some(first) = m.text("negotiated") else {
        return "-".to_string();
    };
    let mut text = first.replace('/', " ");
    let others = m.num("negotiated_other");
    if others > 0.0 {
        text.push_str(&format!(" (+{others:.0} other)"));
    }
    text
}

/// Latency without and beside the idle tunnels, and how the tunnels fared.
fn beside_idle_notes(m: &Measured) -> String {
    let rate = |ops: f64, secs: f64| if secs > 0.0 { ops / secs } else { 0.0 };
    let mut text = format!(
        "p50/p99/p99.9 {:.0}/{:.0}/{:.0} µs alone → {:.0}/{:.0}/{:.0} µs beside {} idle \
         tunnels; {} → {} req/s; {} of them alive at the end, opened in {:.1} s; RSS {:.1} → \
         {:.1} MiB",
        m.num("base_p50_us"),
        m.num("base_p99_us"),
        m.num("base_p999_us"),
        m.num("p50_us"),
        m.num("p99_us"),
        m.num("p999_us"),
        m.num("tunnels"),
        fmt_num(rate(m.num("base_ops"), m.num("base_secs"))),
        fmt_num(rate(m.num("ops"), m.num("secs"))),
        m.num("alive"),
        m.num("open_secs"),
        m.num("rss_base_kib") / 1024.0,
        m.num("rss_kib") / 1024.0,
    );
    // What a turn costs shows most directly as the target's CPU per request: a loop that
    // pays for idle tunnels on every turn spends more of it beside them.
    let per_request = |cpu: f64, ops: f64| if ops > 0.0 { cpu * 1e6 / ops } else { 0.0 };
    text.push_str(&format!(
        "; target CPU per request {:.1} → {:.1} µs",
        per_request(m.num("base_target_cpu"), m.num("base_ops")),
        per_request(m.num("target_cpu"), m.num("ops")),
    ));
    if m.num("open_errors") > 0.0 {
        text.push_str(&format!("; {} failed to open", m.num("open_errors")));
    }
    text
}

/// Latency alone and beside the bulk stream, and what the bulk stream moved.
fn fairness_notes(m: &Measured) -> String {
    let rate = |ops: f64, secs: f64| if secs > 0.0 { ops / secs } else { 0.0 };
    format!(
        "p50/p99/p99.9 {:.0}/{:.0}/{:.0} µs alone → {:.0}/{:.0}/{:.0} µs beside bulk; \
         {} → {} req/s; bulk {} MB/s; CPU0/CPU1 busy alone {:.0}/{:.0}%",
        m.num("base_p50_us"),
        m.num("base_p99_us"),
        m.num("base_p999_us"),
        m.num("p50_us"),
        m.num("p99_us"),
        m.num("p999_us"),
        fmt_num(rate(m.num("base_ops"), m.num("base_secs"))),
        fmt_num(rate(m.num("ops"), m.num("secs"))),
        fmt_num(rate(m.num("bytes") / 1e6, m.num("secs"))),
        m.num("base_cpu0_busy"),
        m.num("base_cpu1_busy"),
    )
}

/// The legitimate rates, what the attackers met, and the target's memory.
fn flood_notes(m: &Measured) -> String {
    let rate = |ops: f64, secs: f64| if secs > 0.0 { ops / secs } else { 0.0 };
    let mib = |key: &str| m.num(key) / 1024.0;
    let mut parts = vec![format!(
        "{} hs/s attacked vs {} unloaded (CPU0/CPU1 busy unloaded {:.0}/{:.0}%)",
        fmt_num(rate(m.num("ops"), m.num("secs"))),
        fmt_num(rate(m.num("base_ops"), m.num("base_secs"))),
        m.num("base_cpu0_busy"),
        m.num("base_cpu1_busy"),
    )];
    let mut attack = format!(
        "attackers opened {} ({}/s, {} connect errors)",
        m.num("atk_opened"),
        fmt_num(rate(m.num("atk_opened"), m.num("atk_secs"))),
        m.num("atk_errors"),
    );
    if m.num("atk_cut") > 0.0 {
        attack.push_str(&format!(
            ", {} cut by the target after p50 {:.0} / p99 {:.0} / max {:.0} ms",
            m.num("atk_cut"),
            m.num("atk_life_p50_ms"),
            m.num("atk_life_p99_ms"),
            m.num("atk_life_max_ms"),
        ));
    }
    if m.values.contains_key("atk_limit_ms") {
        attack.push_str(&format!(
            ", {} cut late and {} never cut (> {:.1} s + {:.1} s)",
            m.num("atk_late"),
            m.num("atk_uncut"),
            m.num("atk_limit_ms") / 1000.0,
            crate::load::flood::LATE_SLACK.as_secs_f64(),
        ));
    }
    attack.push_str(&format!(
        ", {} open at the end (oldest {:.1} s), held ≥ 1 s: p50 {} max {}",
        m.num("atk_open_end"),
        m.num("atk_open_end_max_ms") / 1000.0,
        m.num("atk_held_p50"),
        m.num("atk_held_max"),
    ));
    parts.push(attack);
    parts.push(format!(
        "CPU 1: legitimate generator {:.0}% unloaded → {:.0}% attacked, attackers {:.0}%",
        100.0 * rate(m.num("base_gen_cpu"), m.num("base_secs")),
        100.0 * rate(m.num("gen_cpu"), m.num("secs")),
        100.0 * rate(m.num("atk_cpu"), m.num("atk_secs")),
    ));
    let mut memory = format!(
        "RSS {:.1} → peak {:.1} → after {:.1} MiB",
        mib("rss_before_kib"),
        mib("rss_peak_kib"),
        mib("rss_after_kib"),
    );
    if let Some(t) = m.text("tunnels_after") {
        memory.push_str(&format!(", {t} tunnels after"));
    }
    parts.push(memory);
    parts.join("; ")
}

/// Formats a figure with sensible precision.
pub fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table's header and cells, shared by the text and markdown forms. A `vs moat-base`
/// column comes after `vs tokio` when a second moat binary was measured.
pub fn cells(rows: &[Row]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let with_base = rows.iter().any(|r| r.target == Kind::MoatBase);
    let mut header = vec![
        "scenario",
        "target",
        "figure",
        "target CPU",
        "per target-CPU-s",
        "vs tokio",
    ];
    if with_base {
        header.push("vs moat-base");
    }
    header.extend(["CPU0/CPU1 busy (irq)", "bound", "negotiated", "notes"]);
    let body = rows
        .iter()
        .map(|row| {
            let kind = row.kind();
            let Some(m) = &row.measured else {
                let what = if row.skipped() { "n/a" } else { "failed" };
                let mut line = vec![
                    row.scenario.name.to_string(),
                    row.target.name().to_string(),
                    what.to_string(),
                ];
                line.resize(header.len() - 1, String::new());
                line.push(row.error.as_deref().map_or(String::new(), error_summary));
                return line;
            };
            let per_cpu = if kind.is_ratio() {
                "-".to_string()
            } else {
                format!("{} {}", fmt_num(m.per_cpu(kind)), kind.per_cpu_unit())
            };
            let mut line = vec![
                row.scenario.name.to_string(),
                row.target.name().to_string(),
                format!("{} {}", fmt_num(m.figure(kind)), kind.unit()),
                format!("{:.0}%", m.target_cpu_pct()),
                per_cpu,
                versus(row, rows, Kind::Tokio),
            ];
            if with_base {
                line.push(versus(row, rows, Kind::MoatBase));
            }
            line.extend([
                format!(
                    "{:.0}/{:.0}% ({:.0}/{:.0}%)",
                    m.cpu_busy_pct(0),
                    m.cpu_busy_pct(1),
                    m.cpu_irq_pct(0),
                    m.cpu_irq_pct(1)
                ),
                row.bound(m).to_string(),
                negotiated(m),
                row.notes(m, rows),
            ]);
            line
        })
        .collect();
    (header, body)
}

/// A row's per-CPU figure over the `other` target's in the same scenario: `1.03×`, or `-`
/// when either figure is missing.
fn versus(row: &Row, rows: &[Row], other: Kind) -> String {
    let theirs = rows
        .iter()
        .find(|r| r.scenario.name == row.scenario.name && r.target == other)
        .and_then(Row::per_cpu);
    match (row.per_cpu(), theirs) {
        (Some(x), Some(t)) if t > 0.0 => {
            let note = if row.kind().lower_is_better() {
                " (lower is better)"
            } else {
                ""
            };
            format!("{:.2}×{note}", x / t)
        }
        _ => "-".to_string(),
    }
}

/// The table as aligned plain text.
pub fn text_table(rows: &[Row]) -> String {
    let (header, body) = cells(rows);
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = render(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    let mut last_scenario = String::new();
    for line in body {
        if !last_scenario.is_empty() && line[0] != last_scenario {
            out.push('\n');
        }
        last_scenario = line[0].clone();
        out.push_str(&render(line));
        out.push('\n');
    }
    out
}

/// The table as markdown.
pub fn markdown_table(rows: &[Row]) -> String {
    let (header, body) = cells(rows);
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for line in body {
        let escaped: Vec<String> = line.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", escaped.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::scenario;

    fn row(name: &str, target: Kind, result: &str) -> Row {
        let scenario = scenario::all(scenario::HANDSHAKE_CONCURRENCY)
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        Row {
            scenario,
            target,
            measured: Measured::parse(result),
            error: None,
        }
    }

    #[test]
    fn negotiated_column_pairing_and_baseline() {
        let rows = [
            row(
                "handshake-mlkem",
                Kind::Moat,
                "RESULT secs=1 ops=4000 target_cpu=1 negotiated=AES_256_GCM_SHA384/X25519MLKEM768 negotiated_other=0",
            ),
            row(
                "handshake-mlkem",
                Kind::MoatBase,
                "RESULT secs=1 ops=2000 target_cpu=1 negotiated=AES_256_GCM_SHA384/X25519 negotiated_other=3",
            ),
            row(
                "handshake-x25519",
                Kind::Moat,
                "RESULT secs=1 ops=5000 target_cpu=1 negotiated=AES_256_GCM_SHA384/X25519",
            ),
        ];
        let (header, body) = cells(&rows);
        let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
        assert_eq!(
            body[0][column("negotiated")],
            "AES_256_GCM_SHA384 X25519MLKEM768"
        );
        assert_eq!(
            body[1][column("negotiated")],
            "AES_256_GCM_SHA384 X25519 (+3 other)"
        );
        assert_eq!(body[0][column("vs moat-base")], "2.00×");
        let notes = &body[0][column("notes")];
        assert!(
            notes.contains("target CPU per handshake 1.25× handshake-x25519's (250 vs 200 µs)"),
            "{notes}"
        );
        assert_eq!(
            error_summary(
                "moat did not start: it exited (exit status: 2); its log says:\n\
                 moat: unknown flag --workers (see moat --help) (target log: x.log)"
            ),
            "moat did not start: it exited (exit status: 2); its log says: \
             moat: unknown flag --workers (see moat --help) (target log: x.log)"
        );
        assert_eq!(error_summary("refused\nmore"), "refused");
        // moat-base has no handshake-x25519 row of its own.
        assert!(body[1][column("notes")].contains("run handshake-x25519 too"));
        assert!(!cells(&rows[2..]).0.contains(&"vs moat-base"));
    }
}
