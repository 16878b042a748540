#!/usr/bin/env python3
"""Judges one testssl.sh JSON report (--jsonfile) of a moat server.

Usage: testssl_verdict.py LABEL REPORT.json [--client-auth] [--resumption-verified]

Prints every finding that is not plainly OK — each LOW and WARN, each MEDIUM or worse that
is accepted with the reason it is accepted — and exits 1 when any of these holds:

- a finding of severity MEDIUM, HIGH or CRITICAL that ACCEPTED below does not name;
- a FATAL finding, or a WARN that EXPECTED_WARNINGS does not name (testssl could not run
  part of the scan, so its silence proves nothing);
- a check in REQUIRED_OK is missing or not OK (the scan did not reach it, or moat regressed),
  the server cipher order check among them.

--client-auth: the server requires client certificates (testssl 3.0 cannot present one).
--resumption-verified: the conformance script's own s_client check resumed a TLS 1.3
  ticket and a TLS 1.2 session ID on this server (see "connect problem" below).
"""

import json
import re
import sys

FAILING = ("MEDIUM", "HIGH", "CRITICAL")

# Findings of MEDIUM or worse that come from the throw-away certificates the conformance
# script makes, not from moat: what a certificate contains is its CA's choice. Each entry is
# (testssl id, severities, pattern the finding must match, why it is accepted). Keep the
# patterns tight, so that a different finding under the same id still fails.
ACCEPTED = [
    (
        "cert_revocation",
        {"HIGH"},
        r"^Neither CRL nor OCSP URI provided$",
        "the test CA puts no CRL distribution point and no OCSP URI in the certificates it "
        "issues (a private CA for one tunnel has no revocation service to point at); the "
        "contents of the server certificate are the CA's choice, not moat's",
    ),
    # Lifetime findings (CA/Browser Forum style). The script's default server certificate
    # lives 90 days, which raises none of them; they appear with --cert-days below 60
    # (testssl: MEDIUM below 60 days left, HIGH below 30) or above 825 days (MEDIUM; HIGH
    # from 10 years on). The dates are the test certificate's, chosen by the script.
    (
        "cert_expirationStatus",
        {"MEDIUM", "HIGH"},
        r"^expires < \d+ days \(\d+\)$",
        "the throw-away server certificate was made with fewer than 60 days of life "
        "(--cert-days); it is made anew on every run",
    ),
    (
        "cert_notAfter",
        {"MEDIUM", "HIGH"},
        r"^\d{4}-\d\d-\d\d \d\d:\d\d$",
        "the same expiry finding as cert_expirationStatus, repeated with the date",
    ),
    (
        "cert_validityPeriod",
        {"MEDIUM", "HIGH"},
        r"^\d+( > 825)? days$",
        "the throw-away server certificate was made with a lifetime above 825 days "
        "(--cert-days)",
    ),
]

# Warnings that say what testssl could not test, and why that is expected here: (testssl
# id, when it is expected: "always", "client-auth" or "resumption-verified", pattern the
# finding must match, why).
EXPECTED_WARNINGS = [
    (
        "engine_problem",
        "always",
        r"^No engine or GOST support",
        "about the scanning machine: the local OpenSSL has no GOST engine (moat offers no "
        "GOST suites either)",
    ),
    (
        "sessionresumption_ID",
        "client-auth",
        r"because of client authentication$",
        "testssl 3.0 cannot present a client certificate, so no session exists to resume; "
        "the plain-TLS instance runs this check on the same TLS configuration",
    ),
    (
        "secure_client_renego",
        "client-auth",
        r"^client x509-based authentication prevents this from being tested$",
        "as above: no completed handshake without a client certificate; the plain-TLS "
        "instance and sslyze --reneg with a client certificate cover it",
    ),
    (
        "BREACH",
        "client-auth",
        r"^client x509-based authentication prevents this from being tested$",
        "an HTTP compression check; moat does not speak HTTP and the scan cannot get "
        "past client authentication anyway",
    ),
]

# testssl saves the session with `s_client -sess_out </dev/null`, which quits as soon as its
# handshake is done: a TLS 1.3 ticket, sent after the handshake, is saved only if it arrives
# before s_client's next look at its input. On a busy machine it often does not (against
# `openssl s_server` as well), the second connection has no session to offer, and testssl
# calls it a connect problem. The conformance script then checks resumption itself, with
# s_client's input held open for a second.
for ident in ("sessionresumption_ticket", "sessionresumption_ID"):
    EXPECTED_WARNINGS.append(
        (
            ident,
            "resumption-verified",
            r"^check failed because of connect problem$",
            "s_client quit before the session ticket arrived (a race in testssl's check); "
            "the conformance script's own s_client check resumed on this server",
        )
    )

# LOW findings seen on moat, and what they mean; they never fail the scan.
KNOWN_LOW = {
    "DNS_CAArecord": "no DNS CAA record: the scan is of 127.0.0.1, which has no DNS name "
    "(CAA records are a public CA's concern, set in the domain's DNS, not in moat)",
}

# Checks that must have run and passed; without them a quiet report proves nothing.
REQUIRED_OK = [
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
    "cipher_order",  # moat follows its own suite order, not the client's
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
]


# Of these, findings that must read exactly so. "server" for cipher_order means moat's own
# suite order holds for every TLS version ("server -- TLS 1.3 client determined" would mean
# the client's order wins in TLS 1.3).
REQUIRED_FINDING = {"cipher_order": "server"}


def accepted(finding):
    """The reason a MEDIUM-or-worse finding is accepted, or None."""
    for ident, severities, pattern, why in ACCEPTED:
        if (
            finding["id"] == ident
            and finding["severity"] in severities
            and re.search(pattern, finding["finding"])
        ):
            return why
    return None


def expected_warning(finding, conditions):
    """The reason a WARN finding is expected, or None."""
    for ident, when, pattern, why in EXPECTED_WARNINGS:
        if (
            finding["id"] == ident
            and (when == "always" or when in conditions)
            and re.search(pattern, finding["finding"])
        ):
            return why
    return None


def judge(label, findings, conditions):
    """Prints the notable findings; returns the list of problems."""
    problems = []
    counts = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"testssl {label}: {len(findings)} findings ({summary})")

    for f in findings:
        ident, severity, text = f["id"], f["severity"], f["finding"]
        line = f"{severity:8} {ident}: {text}"
        if severity in FAILING:
            why = accepted(f)
            if why is None:
                problems.append(f"{line}  <- not on the allow-list")
            else:
                print(f"  accepted {line}\n           because {why}")
        elif severity == "WARN":
            why = expected_warning(f, conditions)
            if why is None:
                problems.append(f"{line}  <- testssl could not run this check")
            else:
                print(f"  expected {line}\n           because {why}")
        elif severity == "FATAL":
            problems.append(f"{line}  <- the scan did not complete")
        elif severity == "LOW":
            why = KNOWN_LOW.get(ident, "not judged here; see docs/ROBUSTNESS.md")
            print(f"  low      {line}\n           {why}")

    by_id = {f["id"]: f for f in findings}
    for ident in REQUIRED_OK:
        f = by_id.get(ident)
        if f is None:
            problems.append(f"{ident}: missing from the report (the scan did not reach it)")
        elif f["severity"] != "OK":
            problems.append(f"{ident}: {f['severity']} {f['finding']} (expected OK)")
        elif REQUIRED_FINDING.get(ident, f["finding"]) != f["finding"]:
            want = REQUIRED_FINDING[ident]
            problems.append(f"{ident}: {f['finding']!r} (expected {want!r})")
    order = by_id.get("cipher_order")
    if order is not None:
        print(f"  server cipher order: {order['severity']} ({order['finding']})")
    if "scanTime" not in by_id:
        problems.append("scanTime: missing (testssl did not finish the scan)")
    return problems


def main(argv):
    flags = {"--client-auth", "--resumption-verified"}
    args = [a for a in argv[1:] if a not in flags]
    conditions = {a[2:] for a in argv[1:] if a in flags}
    if len(args) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    label, path = args
    try:
        with open(path, encoding="utf-8") as report:
            findings = json.load(report)
    except (OSError, ValueError) as e:
        print(f"testssl {label}: cannot read the report {path}: {e}", file=sys.stderr)
        return 1
    problems = judge(label, findings, conditions)
    for p in problems:
        print(f"  FAILED   {p}")
    print(f"testssl {label}: {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
