//! TLS conformance judged by tools nobody here wrote: `scripts/conformance.sh` runs
//! testssl.sh against server mode with plain and with mutual TLS, and sslyze against
//! Mozilla's TLS configurations, on the binary this build made (docs/ROBUSTNESS.md has the
//! findings). The script prints every finding and decides; here its exit code is the verdict.
//!
//! The judge itself, `scripts/testssl_verdict.py`, is checked on small made-up reports, so
//! that an allow-list grown too wide or a vacuous scan cannot pass unnoticed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The program the environment variable `var` names, if set, else the first of `names` on
/// the PATH.
fn find_program(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Fails the test, saying what to install, when a program it needs is missing.
fn require(var: &str, names: &[&str], install: &str) -> PathBuf {
    find_program(var, names).unwrap_or_else(|| {
        panic!(
            "`{}` is not installed or not on PATH; the conformance test needs it: {install} \
             (or set {var}=/path/to/it); .ci/run installs it",
            names.join("` or `")
        )
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn testssl_and_sslyze_find_nothing_of_medium_or_worse_in_server_mode() {
    // The scanners start their own moats; the suite's second pass (MOAT_TEST_WORKERS) has
    // nothing to add to this one but two more minutes.
    if std::env::var_os("MOAT_TEST_WORKERS").is_some() {
        eprintln!("conformance scan already run in the suite's first pass");
        return;
    }
    let testssl = require(
        "TESTSSL",
        &["testssl", "testssl.sh"],
        "Debian/Ubuntu: apt-get install testssl.sh",
    );
    let sslyze = require(
        "SSLYZE",
        &["sslyze"],
        "python3 -m venv ~/.venvs/sslyze && ~/.venvs/sslyze/bin/pip install sslyze==6.3.1",
    );
    require(
        "PYTHON3",
        &["python3"],
        "Debian/Ubuntu: apt-get install python3",
    );
    require(
        "OPENSSL",
        &["openssl"],
        "Debian/Ubuntu: apt-get install openssl",
    );

    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/conformance.sh"))
        .args(["--moat", env!("CARGO_BIN_EXE_moat")])
        .env("TESTSSL", testssl)
        .env("SSLYZE", sslyze)
        .current_dir(ROOT)
        .output()
        .expect("run scripts/conformance.sh");
    let report = text(&out);
    println!("{report}");
    assert!(
        out.status.success(),
        "scripts/conformance.sh failed ({}):\n{report}",
        out.status
    );
    // The checks issue 11 names, seen in the script's own words.
    for needle in [
        "testssl plain: passed",
        "testssl mtls: passed",
        "server cipher order: OK (server)",
        "sslyze plain against Mozilla's \"intermediate\": OK - Compliant.",
        "sslyze mtls against Mozilla's \"intermediate\": OK - Compliant.",
        "sslyze tls13 against Mozilla's \"modern\": OK - Compliant.",
        "TLS 1.3 early data refused (OK)",
        "conformance: passed",
    ] {
        assert!(report.contains(needle), "no {needle:?} in:\n{report}");
    }
}

/// A report in which every check the verdict requires ran and passed.
fn clean_report() -> Vec<Value> {
    let ok = [
        "SSLv2",
        "SSLv3",
        "TLS1_2",
        "TLS1_3",
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_STRONG",
        "PFS",
        "cipher_order",
        "cert_chain_of_trust",
        "heartbleed",
        "CCS",
        "ROBOT",
        "secure_renego",
        "POODLE_SSL",
        "SWEET32",
        "FREAK",
        "DROWN",
        "LOGJAM",
        "BEAST",
        "LUCKY13",
        "RC4",
    ];
    let mut findings: Vec<Value> = ok
        .iter()
        .map(|id| {
            finding(
                id,
                "OK",
                if *id == "cipher_order" {
                    "server"
                } else {
                    "fine"
                },
            )
        })
        .collect();
    findings.push(json!({"id": "scanTime", "severity": "INFO", "finding": "90"}));
    findings
}

/// Runs the verdict on `findings`; returns (passed, what it printed).
fn verdict(name: &str, findings: &[Value], client_auth: bool) -> (bool, String) {
    let python = require(
        "PYTHON3",
        &["python3"],
        "Debian/Ubuntu: apt-get install python3",
    );
    let dir = std::env::temp_dir().join(format!("moat-verdict-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let report = dir.join("report.json");
    std::fs::write(&report, serde_json::to_vec(findings).unwrap()).expect("write report");
    let mut command = Command::new(python);
    command
        .arg(Path::new(ROOT).join("scripts/testssl_verdict.py"))
        .arg(name)
        .arg(&report);
    if client_auth {
        command.arg("--client-auth");
    }
    let out = command.output().expect("run testssl_verdict.py");
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.success(), text(&out))
}

fn finding(id: &str, severity: &str, text: &str) -> Value {
    json!({"id": id, "severity": severity, "finding": text})
}

#[test]
fn the_verdict_passes_a_clean_report_and_lists_what_it_accepts() {
    let mut findings = clean_report();
    findings.push(finding(
        "cert_revocation",
        "HIGH",
        "Neither CRL nor OCSP URI provided",
    ));
    findings.push(finding(
        "cert_expirationStatus",
        "HIGH",
        "expires < 30 days (6)",
    ));
    findings.push(finding("DNS_CAArecord", "LOW", "--"));
    let (passed, out) = verdict("accepted", &findings, false);
    assert!(passed, "{out}");
    assert!(
        out.contains("accepted HIGH     cert_revocation")
            && out.contains("accepted HIGH     cert_expirationStatus")
            && out.contains("low      LOW      DNS_CAArecord"),
        "accepted findings must be listed, not hidden:\n{out}"
    );
}

#[test]
fn the_verdict_fails_on_a_finding_of_medium_or_worse_that_it_does_not_name() {
    for (id, severity, text) in [
        ("BEAST_CBC_TLS1", "MEDIUM", "ECDHE-RSA-AES128-SHA"),
        ("cipherlist_AVERAGE", "LOW", "offered"), // LOW: listed, passes
        (
            "cert_chain_of_trust",
            "CRITICAL",
            "failed (self signed CA in chain).",
        ),
        // An accepted id with a different finding is not accepted.
        ("cert_expirationStatus", "CRITICAL", "expired"),
    ] {
        let mut findings = clean_report();
        findings.retain(|f| f["id"] != id);
        findings.push(finding(id, severity, text));
        let (passed, out) = verdict(id, &findings, false);
        assert_eq!(passed, severity == "LOW", "{id} {severity}:\n{out}");
    }
}

#[test]
fn the_verdict_fails_on_an_incomplete_scan() {
    // A check that did not run.
    let mut findings = clean_report();
    findings.retain(|f| f["id"] != "cipher_order");
    let (passed, out) = verdict("missing", &findings, false);
    assert!(!passed && out.contains("cipher_order: missing"), "{out}");

    // The client's suite order followed, in every version or in TLS 1.3 only (testssl's
    // words).
    for (severity, text) in [
        ("HIGH", "NOT a cipher order configured"),
        ("INFO", "not a cipher order for TLS 1.3 configured"),
        ("OK", "server -- TLS 1.3 client determined"),
    ] {
        let mut findings = clean_report();
        findings.retain(|f| f["id"] != "cipher_order");
        findings.push(finding("cipher_order", severity, text));
        let (passed, out) = verdict("client-order", &findings, false);
        assert!(
            !passed && out.contains("FAILED   cipher_order"),
            "{text}:\n{out}"
        );
    }

    // A scan that stopped, and a warning that is expected only with client authentication.
    let mut findings = clean_report();
    findings.retain(|f| f["id"] != "scanTime");
    let (passed, _) = verdict("unfinished", &findings, false);
    assert!(!passed);
    let warning = finding(
        "secure_client_renego",
        "WARN",
        "client x509-based authentication prevents this from being tested",
    );
    let mut findings = clean_report();
    findings.push(warning);
    assert!(!verdict("warn-plain", &findings, false).0);
    assert!(verdict("warn-mtls", &findings, true).0);
    let mut findings = clean_report();
    findings.push(finding("scanProblem", "FATAL", "connection refused"));
    assert!(!verdict("fatal", &findings, false).0);
}
