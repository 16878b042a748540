//! The certificate policy: [`PeerIdentity::from_der`] on arbitrary DER, and the allow-list
//! ([`Policy`]) with rules of every kind — CN, OU, DNS and URI patterns with `*`, SPKI
//! pins — on what it reads.
//!
//! The first byte picks how the rest is used:
//!
//! - 0: as DER, read as it is;
//! - 1: as edits to one of the development certificates (`certs/`): a TLV's content
//!   replaced, its tag changed, a TLV duplicated or removed, a byte flipped, with every
//!   length then made right again, so the edits reach the name-reading code instead of
//!   stopping at a broken length;
//! - 2: as the names themselves (NUL-separated), put straight into a [`PeerIdentity`];
//! - 3: as one pattern and names to match it against, for `--allow-cn` and `--allow-dns`,
//!   compared with a slow reference matcher written from the documented rules.
//!
//! Checked: no panic; `check` agrees with `allows`; every refusal, summary and subject
//! displays as one line with no control character; DNS matching ignores ASCII case and
//! one trailing dot; the patterns match as the reference does.

use std::sync::OnceLock;

use data_encoding::BASE64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::der::{self, Body};
use super::{is_one_line, Input};
use crate::config::PolicyConfig;
use crate::tls::identity::{self, PeerIdentity, Validity};
use crate::tls::Policy;

/// Most edits applied to one certificate.
const MAX_EDITS: usize = 16;

/// Runs one input; panics if an invariant breaks.
pub fn run(input: &[u8]) {
    let mut input = Input::new(input);
    match input.byte() % 4 {
        0 => certificate(input.rest()),
        1 => edited(&mut input),
        2 => names(&mut input),
        _ => patterns(input.rest()),
    }
}

/// The development certificates, the bases for edits.
fn bases() -> &'static [Vec<u8>] {
    static BASES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BASES.get_or_init(|| {
        [
            include_str!("../../certs/client.pem"),
            include_str!("../../certs/server.pem"),
            include_str!("../../certs/ca.pem"),
        ]
        .iter()
        .filter_map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).ok())
        .map(|der| der.as_ref().to_vec())
        .collect()
    })
}

/// The allow-lists checked: every kind of rule together, each kind alone, and none.
fn policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let client = bases()
            .first()
            .and_then(|der| PeerIdentity::from_der(der))
            .unwrap_or_else(|| panic!("the development client certificate does not read"));
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = PolicyConfig {
            allow_cn: strings(&["moat-demo-client", "*.internal", "svc-*-prod"]),
            allow_ou: strings(&["research", "ops.*"]),
            allow_dns: strings(&["*.example.com", "localhost", "DB.Example."]),
            allow_uri: strings(&[
                "spiffe://example.org/ns/prod/*",
                "https://*.example.com/api/*/v1",
                "urn:moat:*",
            ]),
            allow_spki: vec![
                format!("sha256//{}", BASE64.encode(&client.spki_sha256)),
                BASE64.encode(&[0u8; 32]),
            ],
        };
        let only = |pick: fn(&PolicyConfig, &mut PolicyConfig)| {
            let mut one = PolicyConfig::default();
            pick(&all, &mut one);
            one
        };
        let configs = [
            all.clone(),
            only(|a, o| o.allow_cn = a.allow_cn.clone()),
            only(|a, o| o.allow_ou = a.allow_ou.clone()),
            only(|a, o| o.allow_dns = a.allow_dns.clone()),
            only(|a, o| o.allow_uri = a.allow_uri.clone()),
            only(|a, o| o.allow_spki = a.allow_spki.clone()),
            PolicyConfig::default(),
        ];
        let policies: Vec<Policy> = configs
            .iter()
            .map(|c| Policy::parse(c).unwrap_or_else(|e| panic!("fixed rules refused: {e}")))
            .collect();
        // The rules must mean something: the client certificate passes by its CN and its pin.
        for i in [0, 1, 5, 6] {
            assert!(policies[i].allows(&client), "policy {i} refuses the client");
        }
        policies
    })
}

fn certificate(der: &[u8]) {
    let _ = (identity::subject(der), identity::validity(der));
    if let Some(peer) = PeerIdentity::from_der(der) {
        assert!(is_one_line(&peer.subject), "subject {:?}", peer.subject);
        check_all(&peer);
    }
}

/// Edits one of the base certificates (see the module notes), then reads it.
fn edited(input: &mut Input<'_>) {
    let bases = bases();
    let Some(base) = bases.get(usize::from(input.byte()) % bases.len().max(1)) else {
        return;
    };
    let Some(mut nodes) = der::read(base) else {
        panic!("a development certificate is not DER");
    };
    for _ in 0..MAX_EDITS {
        if input.is_empty() {
            break;
        }
        let (op, at) = (input.byte(), usize::from(input.u16()));
        let paths = der::paths(&nodes);
        let Some(path) = paths.get(at % paths.len().max(1)) else {
            break;
        };
        let Some((list, i)) = der::parent_of(&mut nodes, path) else {
            break;
        };
        match op % 5 {
            0 => {
                let len = usize::from(input.byte());
                list[i].body = Body::Bytes(input.bytes(len).to_vec());
            }
            1 => list[i].tag = input.byte(),
            2 => {
                let copy = list[i].clone();
                list.insert(i, copy);
            }
            3 => {
                list.remove(i);
            }
            _ => {
                let (pos, flip) = (usize::from(input.u16()), input.byte());
                if let Body::Bytes(bytes) = &mut list[i].body {
                    let len = bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(pos % len) {
                        *b ^= flip;
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    der::write(&nodes, &mut out);
    certificate(&out);
}

/// Names straight from the input: piece `i` goes to CN, OU, DNS, URI in turn.
fn names(input: &mut Input<'_>) {
    let pinned = input.byte() & 1 == 1;
    let text = String::from_utf8_lossy(input.rest());
    let mut peer = PeerIdentity {
        subject: "CN=fuzz".into(),
        common_names: Vec::new(),
        org_units: Vec::new(),
        dns_names: Vec::new(),
        uris: Vec::new(),
        spki_sha256: [0; 32],
        validity: Validity {
            not_before: 0,
            not_after: u64::MAX,
        },
    };
    if !pinned {
        peer.spki_sha256[0] = 1;
    }
    for (i, piece) in text.split('\0').enumerate() {
        let list = match i % 4 {
            0 => &mut peer.common_names,
            1 => &mut peer.org_units,
            2 => &mut peer.dns_names,
            _ => &mut peer.uris,
        };
        list.push(piece.to_owned());
    }
    check_all(&peer);
}

fn check_all(peer: &PeerIdentity) {
    let summary = peer.summary().to_string();
    assert!(is_one_line(&summary), "summary {summary:?}");
    for (i, policy) in policies().iter().enumerate() {
        let allowed = policy.allows(peer);
        match policy.check(peer) {
            Ok(()) => assert!(allowed, "policy {i}: check passes what allows refuses"),
            Err(refusal) => {
                assert!(!allowed, "policy {i}: check refuses what allows passes");
                let shown = refusal.to_string();
                assert!(is_one_line(&shown), "refusal {shown:?}");
            }
        }
        let unreadable = policy.unreadable().to_string();
        assert!(is_one_line(&unreadable), "{unreadable:?}");
    }
    // DNS names compare without regard to ASCII case, and a trailing dot does not count.
    if let Some(dns_only) = policies().get(3) {
        let mut other = peer.clone();
        for name in &mut other.dns_names {
            *name = name.to_ascii_uppercase();
            if !name.ends_with('.') {
                name.push('.');
            }
        }
        assert_eq!(
            dns_only.allows(peer),
            dns_only.allows(&other),
            "{:?} and {:?}",
            peer.dns_names,
            other.dns_names
        );
    }
}

/// One pattern from the input against names from the input, as `--allow-cn` and as
/// `--allow-dns`, compared with [`reference_match`].
fn patterns(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut pieces = text.split('\0');
    let pattern = pieces.next().unwrap_or_default();
    let names: Vec<String> = pieces.map(str::to_owned).collect();
    let cn = PolicyConfig {
        allow_cn: vec![pattern.to_owned()],
        ..PolicyConfig::default()
    };
    let dns = PolicyConfig {
        allow_dns: vec![pattern.to_owned()],
        ..PolicyConfig::default()
    };
    for (config, is_dns) in [(cn, false), (dns, true)] {
        let policy = match Policy::parse(&config) {
            Ok(policy) => policy,
            Err(e) => {
                let shown = e.to_string();
                assert!(is_one_line(&shown), "{shown:?}");
                continue;
            }
        };
        for name in &names {
            let mut peer = PeerIdentity {
                subject: String::new(),
                common_names: Vec::new(),
                org_units: Vec::new(),
                dns_names: Vec::new(),
                uris: Vec::new(),
                spki_sha256: [0; 32],
                validity: Validity {
                    not_before: 0,
                    not_after: 0,
                },
            };
            let (pattern, name) = if is_dns {
                peer.dns_names.push(name.clone());
                (normalize_dns(pattern), normalize_dns(name))
            } else {
                peer.common_names.push(name.clone());
                (pattern.to_owned(), name.clone())
            };
            assert_eq!(
                policy.allows(&peer),
                reference_match(&pattern, &name),
                "pattern {pattern:?}, name {name:?}, dns {is_dns}"
            );
        }
    }
}

fn normalize_dns(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The documented rule, written the slow and obvious way: as many labels on both sides,
/// and in each label `*` matches any run of characters.
fn reference_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let name: Vec<&str> = name.split('.').collect();
    pattern.len() == name.len()
        && pattern.iter().zip(&name).all(|(p, n)| {
            let p: Vec<char> = p.chars().collect();
            let n: Vec<char> = n.chars().collect();
            glob(&p, &n)
        })
}

/// `*` matches any run of characters, by dynamic programming over both strings.
fn glob(pattern: &[char], text: &[char]) -> bool {
    // matches[j]: whether the pattern so far matches the first j characters of `text`.
    let mut matches = vec![false; text.len() + 1];
    matches[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == '*' {
            let mut reached = false;
            for j in 0..=text.len() {
                reached |= matches[j];
                next[j] = reached;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = matches[j - 1] && text[j - 1] == p;
            }
        }
        matches = next;
    }
    matches[text.len()]
}
