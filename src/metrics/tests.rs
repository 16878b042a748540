//! Rendering a known state and reading it back: with `prometheus-parse`, a parser written
//! by others, and with a strict reading of the 0.0.4 grammar below, which also undoes the
//! escaping (`prometheus-parse` keeps label values as written).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_parse::{LineInfo, Scrape, Value};
use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

use super::*;

/// Two loops (as two workers would have), a service on both, one on only the second.
fn known_state() -> (ProcessMetrics, Vec<Arc<LoopMetrics>>) {
    let process = ProcessMetrics::new(UNIX_EPOCH + Duration::from_secs(1_000));
    process.reload_failed();
    process.reload_succeeded(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    process.log_lines_dropped.add(3);
    let loops = vec![
        Arc::new(LoopMetrics::default()),
        Arc::new(LoopMetrics::default()),
    ];
    for (i, each) in loops.iter().enumerate() {
        let redis = each.service("redis");
        redis.alpn.configure(&[b"redis".to_vec()]);
        for _ in 0..=i {
            redis.tunnel_opened();
        }
        redis.tunnel_closed(TunnelEnd::Clean);
        redis.relayed(100, 2_000);
        let tls13 = Negotiated {
            version: Some(ProtocolVersion::TLSv1_3),
            suite: Some(CipherSuite::TLS13_AES_128_GCM_SHA256),
            group: Some(NamedGroup::X25519MLKEM768),
            alpn: Some(b"redis"),
            resumed: i == 1,
        };
        redis.handshake_completed(&tls13, Duration::from_micros(1_500));
        redis.handshake_failed(HandshakeFailure::AlertSent);
        redis.timeouts.inc(TimerClass::Idle);
        each.refusals.inc(Refusal::PerIp);
        each.accept_pauses.inc();
        each.set_buffers(2, 5);
    }
    let api = loops[1].service("api");
    api.tunnel_opened();
    api.handshake_completed(
        &Negotiated {
            version: Some(ProtocolVersion::TLSv1_2),
            suite: Some(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA),
            group: Some(NamedGroup::Unknown(0x4242)),
            alpn: Some(b"h2"),
            resumed: false,
        },
        Duration::from_secs(20),
    );
    (process, loops)
}

fn rendered() -> String {
    let (process, loops) = known_state();
    let mut out = String::new();
    render(&process, &loops, &mut out);
    out
}

/// One sample line read strictly: name, unescaped labels, value.
#[derive(Debug)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `name{label="value",...} number` exactly as the 0.0.4 format writes it.
fn strict(line: &str) -> Result<Line, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            let eq = rest.find('=').ok_or("label without '='")?;
            let label = &rest[..eq];
            if !is_name(label) || label.contains(':') {
                return Err(format!("bad label name {label:?}"));
            }
            let mut chars = rest[eq + 1..].strip_prefix('"').ok_or("unquoted")?.chars();
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated value")? {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '\n' => return Err("raw line feed".into()),
                    c => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            rest = chars.as_str();
            match rest.strip_prefix(',') {
                Some(more) => rest = more,
                None => break,
            }
        }
        rest = rest.strip_prefix('}').ok_or("no '}'")?;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Line {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Every line of `body` read strictly, checking the structure around the samples: HELP then
/// TYPE open each family, each family appears once, its samples follow it, counters end in
/// `_total`, everything is prefixed `moat_`, and the body ends with a line feed.
fn strict_body(body: &str) -> Vec<Line> {
    assert!(body.ends_with('\n'));
    let mut families: HashMap<String, String> = HashMap::new();
    let mut current: Option<(String, String)> = None;
    let mut lines = Vec::new();
    let mut iter = body.lines();
    while let Some(line) = iter.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap_or_default();
            let typed = iter.next().unwrap_or_default();
            let mut words = typed.strip_prefix("# TYPE ").unwrap_or_default().split(' ');
            assert_eq!(words.next(), Some(name), "TYPE after HELP: {typed}");
            let kind = words.next().unwrap_or_default().to_owned();
            assert!(["counter", "gauge", "histogram"].contains(&kind.as_str()));
            assert!(name.starts_with("moat_"), "{name}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            let fresh = families.insert(name.to_owned(), kind.clone()).is_none();
            assert!(fresh, "{name} declared twice");
            current = Some((name.to_owned(), kind));
            continue;
        }
        let sample = strict(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let (family, kind) = current.as_ref().expect("sample before any TYPE");
        let own = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| sample.name == format!("{family}{s}")),
            _ => sample.name == *family,
        };
        assert!(own, "{} under family {family}", sample.name);
        lines.push(sample);
    }
    lines
}

fn value(lines: &[Line], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<&Line> = lines
        .iter()
        .filter(|l| l.name == name && l.labels == want)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}");
    found[0].value
}

#[test]
fn prometheus_parse_reads_every_line_with_its_type() {
    let body = rendered();
    for line in body.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
            "not understood: {line:?}"
        );
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let find = |metric: &str, labels: &[(&str, &str)]| {
        let found: Vec<&Value> = scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| &s.value)
            .collect();
        assert_eq!(found.len(), 1, "{metric} {labels:?}");
        found[0].clone()
    };
    let redis = [("service", "redis")];
    assert_eq!(find("moat_tunnels_open", &redis), Value::Gauge(1.0));
    assert_eq!(
        find("moat_tunnels_opened_total", &redis),
        Value::Counter(3.0)
    );
    assert_eq!(
        find(
            "moat_tunnels_closed_total",
            &[("service", "redis"), ("end", "clean")]
        ),
        Value::Counter(2.0)
    );
    assert_eq!(
        find(
            "moat_plaintext_bytes_total",
            &[("service", "redis"), ("direction", "to_client")]
        ),
        Value::Counter(4_000.0)
    );
    assert_eq!(
        find("moat_refusals_total", &[("cap", "per_ip")]),
        Value::Counter(2.0)
    );
    assert_eq!(find("moat_buffers_spare", &[]), Value::Gauge(10.0));
    assert_eq!(
        find("moat_config_reloads_total", &[("result", "failed")]),
        Value::Counter(1.0)
    );
    assert_eq!(
        find("moat_config_last_reload_success_timestamp_seconds", &[]),
        Value::Gauge(1_700_000_000.0)
    );
    let Value::Histogram(buckets) = find("moat_handshake_duration_seconds", &redis) else {
        panic!("not a histogram");
    };
    assert_eq!(buckets.len(), 14);
    let le_2_5ms = buckets
        .iter()
        .find(|b| b.less_than == 0.0025)
        .map(|b| b.count);
    assert_eq!(le_2_5ms, Some(2.0));
    assert!(scrape.docs.contains_key("moat_handshake_failures_total"));
}

#[test]
fn every_series_sums_the_loops_and_every_label_value_is_fixed() {
    let lines = strict_body(&rendered());
    let redis = |label: &'static str, value: &'static str| [("service", "redis"), (label, value)];
    let v = |name, labels: &[(&str, &str)]| value(&lines, name, labels);
    assert_eq!(v("moat_handshakes_total", &[("service", "redis")]), 2.0);
    assert_eq!(
        v("moat_handshakes_resumed_total", &[("service", "redis")]),
        1.0
    );
    assert_eq!(
        v(
            "moat_handshake_failures_total",
            &redis("reason", "alert_sent")
        ),
        2.0
    );
    assert_eq!(v("moat_timeouts_total", &redis("kind", "idle")), 2.0);
    assert_eq!(
        v(
            "moat_handshake_versions_total",
            &redis("version", "TLSv1_3")
        ),
        2.0
    );
    assert_eq!(
        v(
            "moat_handshake_groups_total",
            &redis("group", "X25519MLKEM768")
        ),
        2.0
    );
    assert_eq!(
        v("moat_handshake_alpn_total", &redis("protocol", "redis")),
        2.0
    );
    assert_eq!(v("moat_accept_pauses_total", &[]), 2.0);
    assert_eq!(v("moat_log_lines_dropped_total", &[]), 3.0);
    // Values outside the known sets all land in "other", never in a label of their own.
    let api = |label: &'static str, value: &'static str| [("service", "api"), (label, value)];
    assert_eq!(
        v("moat_handshake_suites_total", &api("suite", "other")),
        1.0
    );
    assert_eq!(
        v("moat_handshake_groups_total", &api("group", "other")),
        1.0
    );
    // An ALPN protocol is always one of the service's own (rustls negotiates no other),
    // so one negotiated before its list was configured gets its name.
    assert_eq!(v("moat_handshake_alpn_total", &api("protocol", "h2")), 1.0);
    assert_eq!(
        v("moat_handshake_alpn_total", &api("protocol", "other")),
        0.0
    );
    assert_eq!(
        v("moat_handshake_versions_total", &api("version", "TLSv1_2")),
        1.0
    );
    // Every series of every label value is there from the start, at zero.
    assert_eq!(
        v(
            "moat_tunnels_closed_total",
            &api("end", "proxy_header_error")
        ),
        0.0
    );
    let ends = lines
        .iter()
        .filter(|l| l.name == "moat_tunnels_closed_total" && l.labels["service"] == "api")
        .count();
    assert_eq!(ends, TunnelEnd::ALL.len());
}

#[test]
fn histogram_buckets_are_cumulative_and_end_at_inf_with_sum_and_count() {
    let lines = strict_body(&rendered());
    for service in ["api", "redis"] {
        let buckets: Vec<&Line> = lines
            .iter()
            .filter(|l| {
                l.name == "moat_handshake_duration_seconds_bucket" && l.labels["service"] == service
            })
            .collect();
        let les: Vec<f64> = buckets
            .iter()
            .map(|l| l.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY))
            .collect();
        assert!(les.windows(2).all(|w| w[0] < w[1]), "{les:?}");
        assert_eq!(
            buckets.last().map(|l| l.labels["le"].as_str()),
            Some("+Inf")
        );
        let counts: Vec<f64> = buckets.iter().map(|l| l.value).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let count = value(
            &lines,
            "moat_handshake_duration_seconds_count",
            &[("service", service)],
        );
        assert_eq!(counts.last().copied(), Some(count));
    }
    let sum = |service| {
        value(
            &lines,
            "moat_handshake_duration_seconds_sum",
            &[("service", service)],
        )
    };
    assert_eq!(sum("redis"), 0.003);
    assert_eq!(sum("api"), 20.0);
    // 20 s is above every bound: only +Inf holds it.
    let api_10s = value(
        &lines,
        "moat_handshake_duration_seconds_bucket",
        &[("service", "api"), ("le", "10")],
    );
    assert_eq!(api_10s, 0.0);
}

#[test]
fn label_values_are_escaped() {
    let process = ProcessMetrics::new(SystemTime::now());
    let one = Arc::new(LoopMetrics::default());
    let awkward = "a \"quoted\" back\\slash\nnew line, comma=equals}";
    one.service(awkward).tunnel_opened();
    let alpn = one.service("alpn");
    alpn.alpn.configure(&[b"x\"y".to_vec(), vec![0xff, b'z']]);
    alpn.alpn.inc(b"x\"y");
    alpn.alpn.inc(&[0xff, b'z']);
    let mut body = String::new();
    render(&process, &[one], &mut body);
    assert!(body.contains(
        r#"moat_tunnels_open{service="a \"quoted\" back\\slash\nnew line, comma=equals}"} 1"#
    ));
    let lines = strict_body(&body);
    assert_eq!(
        value(&lines, "moat_tunnels_open", &[("service", awkward)]),
        1.0
    );
    let protocol = |p| [("service", "alpn"), ("protocol", p)];
    assert_eq!(
        value(&lines, "moat_handshake_alpn_total", &protocol("x\"y")),
        1.0
    );
    // Bytes that are not UTF-8 are replaced, so the body stays valid UTF-8.
    assert_eq!(
        value(&lines, "moat_handshake_alpn_total", &protocol("\u{fffd}z")),
        1.0
    );
}

#[test]
fn rendering_is_deterministic_and_survives_a_reload() {
    let (process, loops) = known_state();
    let mut first = String::new();
    render(&process, &loops, &mut first);
    // A reload that keeps redis and drops api: redis' counters carry on.
    for each in &loops {
        assert!(each.service("redis").tunnels_opened.get() > 0);
        each.retain_services(|name| name == "redis");
    }
    let mut second = String::new();
    render(&process, &loops, &mut second);
    assert!(!second.contains("service=\"api\""));
    let redis_lines = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| l.contains("service=\"redis\""))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(redis_lines(&first), redis_lines(&second));
    let mut third = String::new();
    render(&process, &loops, &mut third);
    assert_eq!(second, third);
}
