//! The status endpoint (`--status`) seen from outside: `/metrics` scraped with `curl`, the
//! whole body parsed (prometheus-parse, a strict reading of format 0.0.4 of our own, and
//! `promtool check metrics`), counters that move as a known sequence of tunnels,
//! refusals and reloads happens; `/healthz` before and during a drain; 404; and a slow
//! request closed at its deadline while the tunnels and other scrapers carry on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use common::tls_client::{client_config, tls_connect, tls_echo, tls_transfer};
use common::{args, random_bytes, wait_closed, Backend, Moat, Pki, PATIENCE};
use moat::status::{MAX_STATUS_CONNS, STATUS_DEADLINE};
use prometheus_parse::{LineInfo, SampleType, Scrape};
use rustls::ClientConfig;

/// An HTTP answer as curl received it.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `curl -i URL`; a missing curl fails the test with what to install.
fn curl(url: &str) -> Answer {
    let output = match Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", url])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run curl ({e}); install it: apt-get install curl"),
    };
    let text = String::from_utf8(output.stdout).expect("UTF-8 answer");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// One series of an exposition.
type Labels = BTreeMap<String, String>;

/// An exposition, read strictly.
struct Metrics {
    body: String,
    samples: Vec<(String, Labels, f64)>,
}

impl Metrics {
    /// Scrapes `/metrics` at `status` and reads the whole body (see [`Metrics::parse`]).
    fn scrape(status: SocketAddr) -> Self {
        let answer = curl(&format!("http://{status}/metrics"));
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        Self::parse(answer.body)
    }

    /// Reads every line of `body`, failing on anything format 0.0.4 does not allow or
    /// moat promises not to do: each family opens with `# HELP` then `# TYPE`, once; its
    /// samples follow it, named after it (histograms: `_bucket`, `_sum`, `_count`); names
    /// start `moat_`; counters end `_total`; every value is a number.
    fn parse(body: String) -> Self {
        assert!(body.ends_with('\n'), "the body ends with a line feed");
        let mut samples = Vec::new();
        let mut families = BTreeSet::new();
        let mut current: Option<(String, SampleType)> = None;
        let mut pending_help: Option<String> = None;
        for line in body.lines() {
            match LineInfo::parse(line) {
                LineInfo::Doc { metric_name, .. } => {
                    assert!(pending_help.is_none(), "HELP without TYPE before {line:?}");
                    assert!(
                        families.insert(metric_name.to_owned()),
                        "{metric_name} opened twice"
                    );
                    pending_help = Some(metric_name.to_owned());
                    current = None;
                }
                LineInfo::Type {
                    metric_name,
                    metric_alias,
                    sample_type,
                } => {
                    let name = metric_alias.unwrap_or(metric_name);
                    assert_eq!(pending_help.take(), Some(name.clone()), "TYPE {name}");
                    assert!(name.starts_with("moat_"), "{name}");
                    assert_ne!(sample_type, SampleType::Untyped, "{line}");
                    if sample_type == SampleType::Counter {
                        assert!(name.ends_with("_total"), "counter {name}");
                    } else {
                        assert!(!name.ends_with("_total"), "{name} is not a counter");
                    }
                    current = Some((name, sample_type));
                }
                LineInfo::Sample {
                    metric_name,
                    labels,
                    value,
                    timestamp,
                } => {
                    let (family, kind) = current
                        .as_ref()
                        .unwrap_or_else(|| panic!("{line:?} has no # HELP / # TYPE"));
                    let own = match *kind {
                        SampleType::Histogram => ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| metric_name.strip_suffix(s) == Some(family)),
                        _ => metric_name == family,
                    };
                    assert!(own, "{metric_name} under # TYPE {family}");
                    assert!(timestamp.is_none(), "{line}");
                    let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
                    let labels = parse_labels(labels.unwrap_or_default(), line);
                    samples.push((metric_name.to_owned(), labels, value));
                }
                LineInfo::Empty | LineInfo::Ignored => panic!("not exposition: {line:?}"),
            }
        }
        assert!(pending_help.is_none());
        // The crate's reading must agree with ours, series for series.
        let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse");
        let plain = samples.iter().filter(|(n, ..)| !n.ends_with("_bucket"));
        assert_eq!(scrape.docs.len(), families.len());
        assert!(scrape.samples.len() >= plain.count());
        Self { body, samples }
    }

    /// The value of the series `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| n == name && *l == want)
            .map(|(.., v)| *v)
            .collect();
        match found[..] {
            [value] => value,
            _ => panic!("{} series {name}{want:?} in\n{}", found.len(), self.body),
        }
    }

    /// The value for the `server` service.
    fn server(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        let mut labels = vec![("service", "server")];
        labels.extend(label);
        self.get(name, &labels)
    }

    /// Every series of `name`, with its labels.
    fn all(&self, name: &str) -> Vec<(Labels, f64)> {
        self.samples
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

/// `a="x",b="y\"z"` into a map, escapes undone; anything malformed fails.
fn parse_labels(text: &str, line: &str) -> Labels {
    let mut labels = Labels::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {name:?} in {line}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line}"),
            }
        };
        assert!(labels.insert(name.to_owned(), value).is_none(), "{line}");
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// `promtool check metrics` on `body`: Prometheus' own linter.
fn promtool_check(body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install it: apt-get install prometheus")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn with_alpn(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"redis".to_vec()];
    Arc::new(config)
}

/// A fresh client configuration (no session to resume) offering ALPN `redis`.
fn fresh(pki: &Pki, identity: &str) -> Arc<ClientConfig> {
    with_alpn(client_config(pki, Some(identity)))
}

fn status_moat(pki: &Pki, target: &str, extra: &[&str]) -> (Moat, SocketAddr, SocketAddr) {
    let mut argv = pki.server_args(target);
    argv.extend(["--status", "127.0.0.1:0", "--alpn", "redis"].map(String::from));
    argv.extend(extra.iter().map(|s| s.to_string()));
    let moat = Moat::start(&args(&argv));
    let status = moat.addr_of("status");
    let tunnels = moat.addr_of("server");
    (moat, status, tunnels)
}

#[test]
fn metrics_parse_whole_and_count_a_known_sequence_of_tunnels_refusals_and_reloads() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (moat, status, addr) = status_moat(&pki, &backend.target(), &["--max-conns-per-ip", "2"]);

    let before = Metrics::scrape(status);
    promtool_check(&before.body);
    assert_eq!(before.server("moat_tunnels_opened_total", None), 0.0);
    assert_eq!(before.server("moat_tunnels_open", None), 0.0);
    // The configured protocol is there from the start, counting none yet.
    let redis = ("protocol", "redis");
    assert_eq!(before.server("moat_handshake_alpn_total", Some(redis)), 0.0);
    assert_eq!(
        before.get("moat_config_reloads_total", &[("result", "ok")]),
        0.0
    );
    let loaded = before.get("moat_config_last_reload_success_timestamp_seconds", &[]);
    assert!(loaded > 1.7e9, "start-up time {loaded}");

    // Three tunnels end cleanly, one is cut off without close_notify.
    let mut sent = 0;
    for seed in 1..=3 {
        let data = random_bytes(10_000 * seed as usize, seed);
        let back = tls_transfer(addr, fresh(&pki, "client"), &data).expect("transfer");
        assert_eq!(back, data);
        sent += data.len();
    }
    moat.wait_for_count("end=clean", 3);
    {
        let mut tls = tls_connect(addr, fresh(&pki, "client"));
        tls.write_all(b"cut").unwrap();
        let mut back = [0u8; 3];
        tls.read_exact(&mut back).unwrap();
        sent += 3;
    } // dropped: TCP FIN without close_notify
    moat.wait_for("end=truncated");

    // A client certificate from another CA is refused in the handshake.
    assert!(tls_echo(addr, fresh(&pki, "stranger"), b"x").is_err());
    moat.wait_for("end=tls error with client");

    // Two tunnels held open; a third from the same address is refused at accept.
    let mut held: Vec<_> = (0..2)
        .map(|_| {
            let mut tls = tls_connect(addr, fresh(&pki, "client"));
            tls.write_all(b"held").unwrap();
            let mut back = [0u8; 4];
            tls.read_exact(&mut back).unwrap();
            tls
        })
        .collect();
    sent += 8;
    let mut third = common::connect(addr);
    wait_closed(&mut third).unwrap();
    moat.wait_for("--max-conns-per-ip");
    let during = Metrics::scrape(status);
    assert_eq!(during.server("moat_tunnels_open", None), 2.0);
    assert!(during.get("moat_buffers_in_use", &[]) >= 0.0);
    for tls in &mut held {
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let _ = tls.read_to_end(&mut Vec::new());
    }
    moat.wait_for_count("end=clean", 5);

    // A good reload, then one that fails on a broken certificate file.
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP): ");
    std::fs::write(pki.path("server.pem"), "not a certificate\n").unwrap();
    moat.signal("HUP");
    moat.wait_for("reload (SIGHUP) failed");

    let after = Metrics::scrape(status);
    promtool_check(&after.body);
    let m = |name: &str, label: Option<(&str, &str)>| after.server(name, label);
    assert_eq!(m("moat_tunnels_opened_total", None), 7.0);
    assert_eq!(m("moat_tunnels_open", None), 0.0);
    for (labels, value) in after.all("moat_tunnels_closed_total") {
        let expected = match labels["end"].as_str() {
            "clean" => 5.0,
            "truncated" | "tls_error" => 1.0,
            _ => 0.0,
        };
        assert_eq!(value, expected, "moat_tunnels_closed_total{labels:?}");
    }
    for (labels, value) in after.all("moat_handshake_failures_total") {
        let expected = if labels["reason"] == "alert_sent" {
            1.0
        } else {
            0.0
        };
        assert_eq!(value, expected, "moat_handshake_failures_total{labels:?}");
    }
    let handshakes = 6.0;
    assert_eq!(m("moat_handshakes_total", None), handshakes);
    assert_eq!(m("moat_handshakes_resumed_total", None), 0.0);
    // What the log lines say was negotiated is what the labels count.
    let line = moat.wait_for("end=truncated");
    let group = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("group="))
        .expect("group in the line");
    let version = ("version", "TLSv1_3");
    assert_eq!(
        m("moat_handshake_versions_total", Some(version)),
        handshakes
    );
    let suite = ("suite", "TLS13_AES_128_GCM_SHA256");
    assert_eq!(m("moat_handshake_suites_total", Some(suite)), handshakes);
    assert_eq!(
        m("moat_handshake_groups_total", Some(("group", group))),
        handshakes
    );
    assert_eq!(m("moat_handshake_alpn_total", Some(redis)), handshakes);
    let histogram = "moat_handshake_duration_seconds";
    assert_eq!(m(&format!("{histogram}_count"), None), handshakes);
    let inf = after.get(
        &format!("{histogram}_bucket"),
        &[("service", "server"), ("le", "+Inf")],
    );
    assert_eq!(inf, handshakes);
    let buckets: Vec<f64> = after
        .all(&format!("{histogram}_bucket"))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative");
    assert!(m(&format!("{histogram}_sum"), None) > 0.0);
    let bytes = |direction| m("moat_plaintext_bytes_total", Some(("direction", direction)));
    assert_eq!(bytes("to_target"), sent as f64);
    assert_eq!(bytes("to_client"), sent as f64, "echoed");
    let cap = |cap| after.get("moat_refusals_total", &[("cap", cap)]);
    assert_eq!(
        (
            cap("per_ip"),
            cap("max_conns"),
            cap("handshake_budget_eviction")
        ),
        (1.0, 0.0, 0.0)
    );
    for (labels, value) in after.all("moat_timeouts_total") {
        assert_eq!(value, 0.0, "moat_timeouts_total{labels:?}");
    }
    assert_eq!(
        after.get("moat_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        after.get("moat_config_reloads_total", &[("result", "failed")]),
        1.0
    );
    let reloaded = after.get("moat_config_last_reload_success_timestamp_seconds", &[]);
    assert!(reloaded >= loaded, "the good reload's time");
    // Label values come from closed sets and the configuration, never from a peer.
    for peer in ["127.0.0.1", "::1", "test-client", "stranger", "localhost"] {
        assert!(!after.body.contains(peer), "{peer} in the metrics");
    }
}

#[test]
fn bytes_are_counted_while_the_tunnel_that_moves_them_is_still_open() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (_moat, status, addr) = status_moat(&pki, &backend.target(), &[]);
    let data = random_bytes(300_000, 7);
    let mut tls = tls_connect(addr, fresh(&pki, "client"));
    tls.write_all(&data).unwrap();
    let mut back = vec![0; data.len()];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
    // Still open: a scraper's rate must not wait for the tunnel's end.
    let open = Metrics::scrape(status);
    assert_eq!(open.server("moat_tunnels_open", None), 1.0);
    let bytes =
        |direction| open.server("moat_plaintext_bytes_total", Some(("direction", direction)));
    assert_eq!(bytes("to_target"), data.len() as f64);
    assert_eq!(bytes("to_client"), data.len() as f64);
}

#[test]
fn healthz_is_ok_then_draining_after_sigterm_while_a_tunnel_finishes_and_other_paths_are_404() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (mut moat, status, addr) = status_moat(&pki, &backend.target(), &[]);
    let health = curl(&format!("http://{status}/healthz"));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let missing = curl(&format!("http://{status}/metrics/extra"));
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "not found\n")
    );
    assert_eq!(curl(&format!("http://{status}/")).status, 404);

    let mut tls = tls_connect(addr, fresh(&pki, "client"));
    tls.write_all(b"draining").unwrap();
    let mut back = [0u8; 8];
    tls.read_exact(&mut back).unwrap();
    moat.terminate();
    moat.wait_for("SIGTERM: no longer accepting");
    // The loop hears of the shutdown just after the line: ask until it answers so.
    let deadline = Instant::now() + PATIENCE;
    let draining = loop {
        let answer = curl(&format!("http://{status}/healthz"));
        if answer.status != 200 || Instant::now() > deadline {
            break answer;
        }
    };
    assert_eq!(
        (draining.status, draining.body.as_str()),
        (503, "draining\n")
    );
    // Still scraped while draining, and the tunnel still counted.
    assert_eq!(
        Metrics::scrape(status).server("moat_tunnels_open", None),
        1.0
    );
    tls.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    tls.read_exact(&mut back).unwrap();
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let _ = tls.read_to_end(&mut Vec::new());
    assert!(moat.wait_exit().success());
}

/// Every status connection may hold a slot for [`STATUS_DEADLINE`] (5 s) and no longer;
/// a scraper beyond [`MAX_STATUS_CONNS`] waits in the backlog, and the tunnels never wait.
#[test]
fn slow_requests_are_closed_at_their_deadline_and_never_stall_tunnels() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (_moat, status, addr) = status_moat(&pki, &backend.target(), &[]);
    // Each deadline runs from moat's accept, which comes after the connect began.
    let first_connect = Instant::now();
    let slow: Vec<_> = (0..MAX_STATUS_CONNS)
        .map(|_| {
            let opened = Instant::now();
            let mut sock = common::connect(status);
            sock.write_all(b"GET /metr").unwrap();
            (sock, opened)
        })
        .collect();
    // One more, complete, request: it waits for a slot.
    let waiting = thread::spawn(move || {
        let mut sock = common::connect(status);
        sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        sock.read_to_string(&mut answer).unwrap();
        (answer, Instant::now())
    });
    // Meanwhile the tunnels are served.
    assert_eq!(
        tls_echo(addr, fresh(&pki, "client"), b"not stalled").unwrap(),
        b"not stalled"
    );
    for (mut sock, opened) in slow {
        let mut got = Vec::new();
        match sock.read_to_end(&mut got) {
            Ok(_) => assert!(got.is_empty(), "a slow request got {got:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        let closed = Instant::now();
        assert!(
            closed - opened >= STATUS_DEADLINE,
            "closed before its deadline"
        );
    }
    let (answer, answered) = waiting.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    assert!(
        answered - first_connect >= STATUS_DEADLINE,
        "answered before a slot was free"
    );
}

#[test]
fn a_malformed_request_is_answered_400() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let (_moat, status, _) = status_moat(&pki, &backend.target(), &[]);
    let mut sock = common::connect(status);
    sock.write_all(b"\x16\x03\x01 not http\r\n\r\n").unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[test]
fn the_status_endpoint_serves_on_a_unix_socket_too() {
    let pki = Pki::new();
    let backend = Backend::echo();
    let path = pki.path("status.sock");
    let mut argv = pki.server_args(&backend.target());
    argv.extend(["--status".to_string(), format!("unix:{}", path.display())]);
    let moat = Moat::start(&args(&argv));
    moat.wait_for("status: listening on unix:");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(&path)
        .args(["http://moat/healthz", "http://moat/metrics"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl ({e}); install it: apt-get install curl"));
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let body = text.strip_prefix("ok\n").expect("healthz first");
    let metrics = Metrics::parse(body.to_owned());
    assert_eq!(metrics.server("moat_tunnels_open", None), 0.0);
}
