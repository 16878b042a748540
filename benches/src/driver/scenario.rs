//! The scenarios: what the generator does, which backend the target forwards to, and how the
//! generator's `RESULT` line becomes a figure.

use std::collections::HashMap;

use crate::backend::Kind as Backend;

/// One scenario of the benchmark.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    /// One line for the README and the results file.
    pub what: &'static str,
    /// `--mode` of the generator.
    pub mode: &'static str,
    pub backend: Backend,
    pub mtls: bool,
    pub resume: bool,
    /// Connections, streams, or the opening concurrency of the idle scenario.
    pub concurrency: usize,
    /// Idle scenario: tunnels held open.
    pub tunnels: usize,
    pub kind: FigureKind,
    /// Flood scenarios: the attackers started beside the legitimate generator.
    pub attack: Option<Attack>,
    /// Flags of the flood scenarios for moat and the tokio baseline.
    pub limits: Limits,
}

impl Scenario {
    /// A scenario of the `--flood` set: measured on moat and the tokio baseline only.
    pub fn is_flood(&self) -> bool {
        self.attack.is_some() || self.kind == FigureKind::P99Stretch
    }
}

/// The attacking half of a flood scenario: a second generator process.
#[derive(Debug, Clone)]
pub struct Attack {
    /// `--mode` of the attacking generator.
    pub mode: &'static str,
    /// Its `--concurrency`: connections or tasks.
    pub attackers: usize,
    /// The address the attackers connect from.
    pub source_ip: &'static str,
}

/// Target flags a scenario needs beyond the usual ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// `--handshake-timeout` for moat and the tokio baseline.
    pub handshake_timeout: Option<&'static str>,
    /// moat's `--max-conns-per-ip`. The scenario then runs on moat only: nothing else here
    /// has such a cap.
    pub max_conns_per_ip: Option<usize>,
}

/// How a scenario's figure is computed and named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FigureKind {
    Handshakes,
    Megabytes,
    Requests,
    /// Resident memory per idle tunnel; lower is better, and there is no per-CPU figure.
    MemoryPerTunnel,
    /// Request/response p99 beside a bulk stream over p99 without it; lower is better.
    P99Stretch,
    /// Legitimate handshakes per second under attack, in percent of the same run's rate
    /// without the attack.
    PctOfUnloaded,
}

impl FigureKind {
    pub fn unit(self) -> &'static str {
        match self {
            FigureKind::Handshakes => "handshakes/s",
            FigureKind::Megabytes => "MB/s",
            FigureKind::Requests => "req/s",
            FigureKind::MemoryPerTunnel => "KiB/tunnel",
            FigureKind::P99Stretch => "× p99",
            FigureKind::PctOfUnloaded => "% of unloaded",
        }
    }

    /// Kinds whose figure is already a ratio within one run: no per-CPU figure.
    pub fn is_ratio(self) -> bool {
        matches!(
            self,
            FigureKind::MemoryPerTunnel | FigureKind::P99Stretch | FigureKind::PctOfUnloaded
        )
    }

    pub fn per_cpu_unit(self) -> &'static str {
        match self {
            FigureKind::Handshakes => "handshakes/CPU-s",
            FigureKind::Megabytes => "MB/CPU-s",
            FigureKind::Requests => "req/CPU-s",
            FigureKind::MemoryPerTunnel => "KiB/tunnel",
            FigureKind::P99Stretch => "× p99 (with bulk / without)",
            FigureKind::PctOfUnloaded => "% of unloaded handshake rate",
        }
    }

    pub fn lower_is_better(self) -> bool {
        matches!(self, FigureKind::MemoryPerTunnel | FigureKind::P99Stretch)
    }
}

/// Handshake concurrency unless `--concurrency` says otherwise.
pub const HANDSHAKE_CONCURRENCY: usize = 32;

/// All scenarios, in the order they run.
pub fn all(handshake_concurrency: usize) -> Vec<Scenario> {
    let handshake = |name, what, mtls, resume| Scenario {
        name,
        what,
        mode: "handshake",
        backend: Backend::Echo,
        mtls,
        resume,
        concurrency: handshake_concurrency,
        tunnels: 0,
        kind: FigureKind::Handshakes,
        attack: None,
        limits: Limits::default(),
    };
    let bulk = |name, what, upload: bool, streams| Scenario {
        name,
        what,
        mode: if upload { "upload" } else { "download" },
        backend: if upload {
            Backend::Sink
        } else {
            Backend::Source
        },
        mtls: false,
        resume: false,
        concurrency: streams,
        tunnels: 0,
        kind: FigureKind::Megabytes,
        attack: None,
        limits: Limits::default(),
    };
    let idle = |name, what, tunnels| Scenario {
        name,
        what,
        mode: "idle",
        backend: Backend::Echo,
        mtls: false,
        resume: false,
        concurrency: 64,
        tunnels,
        kind: FigureKind::MemoryPerTunnel,
        attack: None,
        limits: Limits::default(),
    };
    vec![
        handshake(
            "handshake",
            "full TLS 1.3 handshake + 16-byte echo + close",
            false,
            false,
        ),
        handshake(
            "handshake-mtls",
            "the same with a client certificate",
            true,
            false,
        ),
        handshake(
            "resume",
            "resumed handshake (ticket) + 16-byte echo + close",
            false,
            true,
        ),
        handshake(
            "resume-mtls",
            "resumed handshake with a client certificate",
            true,
            true,
        ),
        bulk("upload-1", "1 stream writing into a sink", true, 1),
        bulk("upload-8", "8 streams writing into a sink", true, 8),
        bulk("download-1", "1 stream reading from a source", false, 1),
        bulk("download-8", "8 streams reading from a source", false, 8),
        idle("idle-1000", "1,000 echo-checked tunnels held open", 1000),
        idle("idle-2000", "2,000 echo-checked tunnels held open", 2000),
        idle("idle-9000", "9,000 echo-checked tunnels held open", 9000),
        Scenario {
            name: "rr-100",
            what: "100 connections ping-ponging 64 bytes",
            mode: "rr",
            backend: Backend::Echo,
            mtls: false,
            resume: false,
            concurrency: 100,
            tunnels: 0,
            kind: FigureKind::Requests,
            attack: None,
            limits: Limits::default(),
        },
    ]
}

/// Handshake timeout of moat and the tokio baseline in the slowloris scenario.
pub const SLOWLORIS_TIMEOUT: &str = "5s";

/// The flood scenarios (`--flood`): each but `fairness` runs the `handshake` scenario's
/// legitimate clients without and then beside attackers, in one target process.
pub fn flood(handshake_concurrency: usize) -> Vec<Scenario> {
    let attacked = |name, what, mode, attackers, limits| Scenario {
        name,
        what,
        mode: "handshake",
        backend: Backend::Echo,
        mtls: false,
        resume: false,
        concurrency: handshake_concurrency,
        tunnels: 0,
        kind: FigureKind::PctOfUnloaded,
        attack: Some(Attack {
            mode,
            attackers,
            source_ip: "127.0.0.2",
        }),
        limits,
    };
    vec![
        Scenario {
            name: "fairness",
            what: "rr-100 through the mux backend's echo, alone and then beside one TLS stream \
                   downloading from its source at full speed",
            mode: "fairness",
            backend: Backend::Mux,
            mtls: false,
            resume: false,
            concurrency: 100,
            tunnels: 0,
            kind: FigureKind::P99Stretch,
            attack: None,
            limits: Limits::default(),
        },
        attacked(
            "slowloris",
            "full handshakes beside 5,000 connections from 127.0.0.2 that never finish one \
             (half silent, half one ClientHello byte every 2 s); targets run with \
             --handshake-timeout 5s",
            "slowloris",
            5000,
            Limits {
                handshake_timeout: Some(SLOWLORIS_TIMEOUT),
                max_conns_per_ip: None,
            },
        ),
        attacked(
            "storm",
            "full handshakes beside 64 tasks on 127.0.0.2 looping TCP connect → close",
            "storm",
            64,
            Limits::default(),
        ),
        attacked(
            "garbage",
            "full handshakes beside 64 tasks on 127.0.0.2 looping connect → 1 KiB of random \
             bytes → wait for the close",
            "garbage",
            64,
            Limits::default(),
        ),
        attacked(
            "per-ip",
            "full handshakes from 127.0.0.1 beside 3,000 silent connections from 127.0.0.2, \
             each reopened when closed; moat runs with --max-conns-per-ip 100",
            "ip-flood",
            3000,
            Limits {
                handshake_timeout: None,
                max_conns_per_ip: Some(100),
            },
        ),
    ]
}

/// The scenarios `--quick` runs.
pub const QUICK: &[&str] = &[
    "handshake",
    "resume",
    "upload-1",
    "download-1",
    "idle-1000",
    "rr-100",
];

/// One measured run, as parsed from the generator's `RESULT` line.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub values: HashMap<String, String>,
}

impl Measured {
    /// Parses `RESULT key=value ...`.
    pub fn parse(line: &str) -> Option<Measured> {
        let rest = line.strip_prefix("RESULT ")?;
        let values = rest
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Measured { values })
    }

    /// A numeric value, 0 when missing.
    pub fn num(&self, key: &str) -> f64 {
        self.values
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Target CPU use over the window, in percent of one CPU.
    pub fn target_cpu_pct(&self) -> f64 {
        pct(self.num("target_cpu"), self.num("secs"))
    }

    /// Busy share of CPU `n` (0: target, 1: generator and backend) over the window, in
    /// percent, including interrupt and softirq time that no process is charged for.
    pub fn cpu_busy_pct(&self, n: usize) -> f64 {
        self.num(&format!("cpu{n}_busy"))
    }

    /// Interrupt and softirq share of CPU `n` over the window, in percent.
    pub fn cpu_irq_pct(&self, n: usize) -> f64 {
        self.num(&format!("cpu{n}_irq"))
    }

    /// The scenario's figure, in [`FigureKind::unit`].
    pub fn figure(&self, kind: FigureKind) -> f64 {
        let secs = self.num("secs");
        match kind {
            FigureKind::Handshakes | FigureKind::Requests => ratio(self.num("ops"), secs),
            FigureKind::Megabytes => ratio(self.num("bytes") / 1e6, secs),
            FigureKind::MemoryPerTunnel => self.num("bytes_per_tunnel") / 1024.0,
            FigureKind::P99Stretch => ratio(self.num("p99_us"), self.num("base_p99_us")),
            FigureKind::PctOfUnloaded => {
                let unloaded = ratio(self.num("base_ops"), self.num("base_secs"));
                ratio(ratio(self.num("ops"), secs) * 100.0, unloaded)
            }
        }
    }

    /// The figure per second of target CPU: the fair comparison when the generator is the
    /// bottleneck. For memory it is the figure itself.
    pub fn per_cpu(&self, kind: FigureKind) -> f64 {
        let cpu = self.num("target_cpu");
        match kind {
            FigureKind::Handshakes | FigureKind::Requests => ratio(self.num("ops"), cpu),
            FigureKind::Megabytes => ratio(self.num("bytes") / 1e6, cpu),
            FigureKind::MemoryPerTunnel | FigureKind::P99Stretch | FigureKind::PctOfUnloaded => {
                self.figure(kind)
            }
        }
    }
}

fn pct(part: f64, whole: f64) -> f64 {
    ratio(part * 100.0, whole)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_becomes_figures() {
        let m =
            Measured::parse("RESULT secs=2.000 ops=1000 bytes=4000000 target_cpu=0.500").unwrap();
        assert_eq!(m.figure(FigureKind::Handshakes), 500.0);
        assert_eq!(m.per_cpu(FigureKind::Handshakes), 2000.0);
        assert_eq!(m.figure(FigureKind::Megabytes), 2.0);
        assert_eq!(m.per_cpu(FigureKind::Megabytes), 8.0);
        assert_eq!(m.target_cpu_pct(), 25.0);
        assert!(Measured::parse("something else").is_none());
    }

    #[test]
    fn flood_figures() {
        let m = Measured::parse(
            "RESULT secs=2 ops=900 base_secs=3 base_ops=1800 p99_us=300 base_p99_us=200",
        )
        .unwrap();
        assert_eq!(m.figure(FigureKind::PctOfUnloaded), 75.0);
        assert_eq!(m.figure(FigureKind::P99Stretch), 1.5);
        assert_eq!(m.per_cpu(FigureKind::P99Stretch), 1.5);
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut all = all(HANDSHAKE_CONCURRENCY);
        all.extend(flood(HANDSHAKE_CONCURRENCY));
        for (i, s) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|t| t.name != s.name), "{}", s.name);
        }
        for name in QUICK {
            assert!(all.iter().any(|s| s.name == *name), "{name}");
        }
    }
}
