//! The scenarios: what the generator does, which backend the target forwards to, and how the
//! generator's `RESULT` line becomes a figure.

use std::collections::HashMap;

use crate::backend::Kind as Backend;
use crate::tls::ClientProfile;

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
    /// The suites and groups the generator's client offers.
    pub profile: ClientProfile,
    /// Connections, streams, or the opening concurrency of the idle scenario.
    pub concurrency: usize,
    /// Idle scenarios: tunnels held open.
    pub tunnels: usize,
    pub kind: FigureKind,
    /// Flood scenarios: the attackers started beside the legitimate generator.
    pub attack: Option<Attack>,
    /// Flags of the flood scenarios for moat and the tokio baseline.
    pub limits: Limits,
    /// Another scenario of the same run that this one is read against, when both ran.
    pub pairing: Option<Pairing>,
}

impl Scenario {
    /// A scenario of the `--flood` set: measured on moat and the tokio baseline only.
    pub fn is_flood(&self) -> bool {
        self.attack.is_some() || self.kind == FigureKind::P99Stretch
    }

    /// Memory barely changes between runs: one round of an idle-memory scenario is enough.
    pub fn one_round(&self) -> bool {
        self.kind == FigureKind::MemoryPerTunnel
    }

    /// A scenario with nothing set beyond what the generator does and how it is counted.
    fn plain(name: &'static str, what: &'static str, mode: &'static str) -> Scenario {
        Scenario {
            name,
            what,
            mode,
            backend: Backend::Echo,
            mtls: false,
            resume: false,
            profile: ClientProfile::Default,
            concurrency: 1,
            tunnels: 0,
            kind: FigureKind::Handshakes,
            attack: None,
            limits: Limits::default(),
            pairing: None,
        }
    }
}

/// How a scenario's figure is read against another scenario's, same target, same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Target CPU per handshake, this scenario's over the named one's (how much more a
    /// handshake costs the target): the inverse ratio of the per-CPU figures.
    CostPerHandshake(&'static str),
    /// Request/response p99 in this scenario's loaded window over the named one's p99.
    P99(&'static str),
}

impl Pairing {
    /// The scenario this one is read against.
    pub fn with(self) -> &'static str {
        match self {
            Pairing::CostPerHandshake(name) | Pairing::P99(name) => name,
        }
    }

    /// This scenario's figure against the other's, from the two median runs; `None` when
    /// either figure is missing or zero.
    pub fn ratio(self, this: &Measured, other: &Measured) -> Option<f64> {
        let (num, den) = match self {
            Pairing::CostPerHandshake(_) => (
                other.per_cpu(FigureKind::Handshakes),
                this.per_cpu(FigureKind::Handshakes),
            ),
            Pairing::P99(_) => (this.num("p99_us"), other.num("p99_us")),
        };
        (num > 0.0 && den > 0.0).then(|| num / den)
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
    /// Request/response p99 beside idle tunnels over p99 without them; lower is better.
    P99BesideIdle,
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
            FigureKind::P99Stretch | FigureKind::P99BesideIdle => "× p99",
            FigureKind::PctOfUnloaded => "% of unloaded",
        }
    }

    /// Kinds whose figure is already a ratio within one run: no per-CPU figure.
    pub fn is_ratio(self) -> bool {
        matches!(
            self,
            FigureKind::MemoryPerTunnel
                | FigureKind::P99Stretch
                | FigureKind::P99BesideIdle
                | FigureKind::PctOfUnloaded
        )
    }

    pub fn per_cpu_unit(self) -> &'static str {
        match self {
            FigureKind::Handshakes => "handshakes/CPU-s",
            FigureKind::Megabytes => "MB/CPU-s",
            FigureKind::Requests => "req/CPU-s",
            FigureKind::MemoryPerTunnel => "KiB/tunnel",
            FigureKind::P99Stretch => "× p99 (with bulk / without)",
            FigureKind::P99BesideIdle => "× p99 (beside idle tunnels / without)",
            FigureKind::PctOfUnloaded => "% of unloaded handshake rate",
        }
    }

    pub fn lower_is_better(self) -> bool {
        matches!(
            self,
            FigureKind::MemoryPerTunnel | FigureKind::P99Stretch | FigureKind::P99BesideIdle
        )
    }
}

/// Handshake concurrency unless `--concurrency` says otherwise.
pub const HANDSHAKE_CONCURRENCY: usize = 32;

/// All scenarios, in the order they run.
pub fn all(handshake_concurrency: usize) -> Vec<Scenario> {
    let handshake = |name, what, mtls, resume, profile| Scenario {
        mtls,
        resume,
        profile,
        concurrency: handshake_concurrency,
        ..Scenario::plain(name, what, "handshake")
    };
    let bulk = |name, what, upload: bool, streams| Scenario {
        backend: if upload {
            Backend::Sink
        } else {
            Backend::Source
        },
        concurrency: streams,
        kind: FigureKind::Megabytes,
        ..Scenario::plain(name, what, if upload { "upload" } else { "download" })
    };
    let idle = |name, what, tunnels| Scenario {
        concurrency: 64,
        tunnels,
        kind: FigureKind::MemoryPerTunnel,
        ..Scenario::plain(name, what, "idle")
    };
    let (plain, openssl, mlkem) = (
        ClientProfile::Default,
        ClientProfile::OpensslOrder,
        ClientProfile::Mlkem,
    );
    vec![
        handshake(
            "handshake",
            "full TLS 1.3 handshake + 16-byte echo + close",
            false,
            false,
            plain,
        ),
        handshake(
            "handshake-mtls",
            "the same with a client certificate",
            true,
            false,
            plain,
        ),
        handshake(
            "handshake-openssl",
            "full handshake from a client offering OpenSSL 3's suite order \
             (AES-256-GCM, ChaCha20, AES-128-GCM) and X25519 first",
            false,
            false,
            openssl,
        ),
        handshake(
            "handshake-mtls-openssl",
            "the same with a client certificate",
            true,
            false,
            openssl,
        ),
        Scenario {
            pairing: Some(Pairing::CostPerHandshake("handshake-x25519")),
            ..handshake(
                "handshake-mlkem",
                "full handshake from a client offering X25519MLKEM768 first, with its key \
                 share, then X25519",
                false,
                false,
                mlkem,
            )
        },
        handshake(
            "handshake-x25519",
            "the same client as handshake-mlkem without the hybrid: X25519 alone (the \
             handshake scenario under the name that pairs it with handshake-mlkem)",
            false,
            false,
            plain,
        ),
        handshake(
            "resume",
            "resumed handshake (ticket) + 16-byte echo + close",
            false,
            true,
            plain,
        ),
        handshake(
            "resume-mtls",
            "resumed handshake with a client certificate",
            true,
            true,
            plain,
        ),
        bulk("upload-1", "1 stream writing into a sink", true, 1),
        bulk("upload-8", "8 streams writing into a sink", true, 8),
        bulk("download-1", "1 stream reading from a source", false, 1),
        bulk("download-8", "8 streams reading from a source", false, 8),
        idle("idle-1000", "1,000 echo-checked tunnels held open", 1000),
        idle("idle-2000", "2,000 echo-checked tunnels held open", 2000),
        idle("idle-9000", "9,000 echo-checked tunnels held open", 9000),
        Scenario {
            concurrency: 100,
            kind: FigureKind::Requests,
            ..Scenario::plain("rr-100", "100 connections ping-ponging 64 bytes", "rr")
        },
        Scenario {
            concurrency: 100,
            tunnels: RR_IDLE_TUNNELS,
            kind: FigureKind::P99BesideIdle,
            pairing: Some(Pairing::P99("rr-100")),
            ..Scenario::plain(
                "rr-idle-9000",
                "rr-100 measured alone, then again beside 9,000 echo-checked idle tunnels, \
                 in one target process",
                "rr-idle",
            )
        },
    ]
}

/// Idle tunnels beside rr-idle-9000's 100 connections. The target holds two descriptors per
/// tunnel: 2 × 9,100 = 18,200 plus its listener and poll instance, under the 20,000 open
/// files a process may have here, and 9,100 tunnels fit under moat's `--max-conns`
/// ([`super::targets::MAX_TUNNELS`]). The generator holds 9,100, the backend 9,100.
pub const RR_IDLE_TUNNELS: usize = 9000;

/// Handshake timeout of moat and the tokio baseline in the slowloris scenario.
pub const SLOWLORIS_TIMEOUT: &str = "5s";

/// The flood scenarios (`--flood`): each but `fairness` runs the `handshake` scenario's
/// legitimate clients without and then beside attackers, in one target process.
pub fn flood(handshake_concurrency: usize) -> Vec<Scenario> {
    let attacked = |name, what, mode, attackers, limits| Scenario {
        concurrency: handshake_concurrency,
        kind: FigureKind::PctOfUnloaded,
        attack: Some(Attack {
            mode,
            attackers,
            source_ip: "127.0.0.2",
        }),
        limits,
        ..Scenario::plain(name, what, "handshake")
    };
    vec![
        Scenario {
            backend: Backend::Mux,
            concurrency: 100,
            kind: FigureKind::P99Stretch,
            ..Scenario::plain(
                "fairness",
                "rr-100 through the mux backend's echo, alone and then beside one TLS stream \
                 downloading from its source at full speed",
                "fairness",
            )
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
            FigureKind::P99Stretch | FigureKind::P99BesideIdle => {
                ratio(self.num("p99_us"), self.num("base_p99_us"))
            }
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
            FigureKind::MemoryPerTunnel
            | FigureKind::P99Stretch
            | FigureKind::P99BesideIdle
            | FigureKind::PctOfUnloaded => self.figure(kind),
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
    fn beside_idle_figure_and_pairings() {
        let idle = Measured::parse("RESULT p99_us=1210 base_p99_us=1100 target_cpu=1").unwrap();
        assert!((idle.figure(FigureKind::P99BesideIdle) - 1.1).abs() < 1e-9);
        assert_eq!(
            idle.per_cpu(FigureKind::P99BesideIdle),
            idle.figure(FigureKind::P99BesideIdle)
        );
        let rr = Measured::parse("RESULT p99_us=1000").unwrap();
        let ratio = Pairing::P99("rr-100").ratio(&idle, &rr).unwrap();
        assert!((ratio - 1.21).abs() < 1e-9);
        // 4,000 handshakes per CPU-second against 5,000: each costs 1.25× as much.
        let mlkem = Measured::parse("RESULT ops=4000 target_cpu=1").unwrap();
        let x25519 = Measured::parse("RESULT ops=10000 target_cpu=2").unwrap();
        let cost = Pairing::CostPerHandshake("handshake-x25519");
        assert_eq!(cost.ratio(&mlkem, &x25519), Some(1.25));
        assert_eq!(cost.ratio(&mlkem, &Measured::default()), None);
    }

    #[test]
    fn pairings_name_scenarios_that_exist() {
        let all = all(HANDSHAKE_CONCURRENCY);
        for s in &all {
            if let Some(pairing) = s.pairing {
                assert!(all.iter().any(|t| t.name == pairing.with()), "{}", s.name);
            }
        }
    }

    #[test]
    fn rr_idle_fits_the_descriptor_limit() {
        let rr_idle = all(HANDSHAKE_CONCURRENCY)
            .into_iter()
            .find(|s| s.name == "rr-idle-9000")
            .unwrap();
        let tunnels = rr_idle.tunnels + rr_idle.concurrency;
        assert!(tunnels <= crate::driver::targets::MAX_TUNNELS);
        // Two descriptors per tunnel, and moat's own headroom of 64, under 20,000.
        assert!(2 * tunnels + 64 <= 20_000);
        assert!(!rr_idle.one_round() && !rr_idle.is_flood());
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
