//! The allow-list: which peer certificates get in, on top of chaining to the CA.
//!
//! Rules are parsed once, at start-up, from a [`PolicyConfig`] into a [`Policy`]. A peer
//! passes when its chain verifies and, if any rule is given, at least one rule matches its
//! certificate. With no rule, any certificate that chains passes.
//!
//! Patterns: `*` matches any run of characters within one DNS label (`--allow-dns`, and
//! `--allow-cn` / `--allow-ou`, where `.` also separates labels) or within one URI path
//! segment (`--allow-uri`, where the authority's labels count as labels too); nothing else
//! is special. DNS names compare without regard to ASCII case; CN, OU and URIs exactly.

use std::fmt;

use data_encoding::{BASE64, BASE64_NOPAD};

use super::identity::{printable, PeerIdentity};
use crate::config::PolicyConfig;
use crate::error::StartError;

/// The allow-list, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    cn: Vec<Pattern>,
    ou: Vec<Pattern>,
    dns: Vec<Pattern>,
    uri: Vec<Pattern>,
    spki: Vec<[u8; 32]>,
}

/// How a pattern splits names into the parts a `*` stays within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Labels separated by `.`, compared exactly (CN, OU).
    Labels,
    /// A DNS name: labels, compared without regard to ASCII case, trailing dot ignored.
    Dns,
    /// A URI: path segments separated by `/`; the authority's labels by `.`.
    Uri,
}

/// One `--allow-cn`/`-ou`/`-dns`/`-uri` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    kind: Kind,
}

/// Why a certificate was turned away by the allow-list; displayed in the tunnel's log line.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The rule flags that were given, none of which matched: `--allow-cn/--allow-dns`.
    rules: String,
    /// What the certificate had, already safe for a log line.
    had: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused by policy: no {} rule matches; certificate has {}",
            self.rules, self.had
        )
    }
}

impl std::error::Error for Refusal {}

impl Policy {
    /// Parses the rules; a malformed one is an error naming its flag.
    pub fn parse(config: &PolicyConfig) -> Result<Self, StartError> {
        let patterns = |flag: &'static str, list: &[String], kind| {
            list.iter()
                .map(|text| Pattern::parse(flag, text, kind))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            cn: patterns("--allow-cn", &config.allow_cn, Kind::Labels)?,
            ou: patterns("--allow-ou", &config.allow_ou, Kind::Labels)?,
            dns: patterns("--allow-dns", &config.allow_dns, Kind::Dns)?,
            uri: patterns("--allow-uri", &config.allow_uri, Kind::Uri)?,
            spki: config
                .allow_spki
                .iter()
                .map(|pin| parse_pin(pin))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether no rule is given: any certificate that chains passes.
    pub fn is_empty(&self) -> bool {
        self.cn.is_empty()
            && self.ou.is_empty()
            && self.dns.is_empty()
            && self.uri.is_empty()
            && self.spki.is_empty()
    }

    /// Whether `peer` may pass: no rule is given, or one of them matches.
    pub fn allows(&self, peer: &PeerIdentity) -> bool {
        let any = |patterns: &[Pattern], names: &[String]| {
            patterns
                .iter()
                .any(|p| names.iter().any(|name| p.matches(name)))
        };
        self.is_empty()
            || any(&self.cn, &peer.common_names)
            || any(&self.ou, &peer.org_units)
            || any(&self.dns, &peer.dns_names)
            || any(&self.uri, &peer.uris)
            || self.spki.contains(&peer.spki_sha256)
    }

    /// [`Policy::allows`], or the refusal that says which rules failed and what `peer` had.
    pub fn check(&self, peer: &PeerIdentity) -> Result<(), Refusal> {
        if self.allows(peer) {
            return Ok(());
        }
        let mut had = peer.summary().to_string();
        if !self.spki.is_empty() {
            had.push_str(&format!(
                " spki=sha256//{}",
                BASE64.encode(&peer.spki_sha256)
            ));
        }
        Err(Refusal {
            rules: self.flags(),
            had,
        })
    }

    /// The refusal for a certificate whose fields cannot be read, when rules are given.
    pub fn unreadable(&self) -> Refusal {
        Refusal {
            rules: self.flags(),
            had: "fields that cannot be read".into(),
        }
    }

    /// The flags that have rules: `--allow-cn/--allow-dns`.
    fn flags(&self) -> String {
        let given = [
            ("--allow-cn", !self.cn.is_empty()),
            ("--allow-ou", !self.ou.is_empty()),
            ("--allow-dns", !self.dns.is_empty()),
            ("--allow-uri", !self.uri.is_empty()),
            ("--allow-spki", !self.spki.is_empty()),
        ];
        let names: Vec<&str> = given
            .iter()
            .filter(|(_, on)| *on)
            .map(|(flag, _)| *flag)
            .collect();
        names.join("/")
    }
}

impl Pattern {
    fn parse(flag: &'static str, text: &str, kind: Kind) -> Result<Self, StartError> {
        let bad = |reason: &str| StartError::invalid(flag, &printable(text), reason);
        if text.is_empty() {
            return Err(bad("a pattern cannot be empty"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("a pattern cannot hold control characters"));
        }
        let mut text = text.to_owned();
        if kind == Kind::Dns {
            text = normalize_dns(&text).to_owned();
            if text.split('.').any(str::is_empty) {
                return Err(bad("a DNS pattern cannot have an empty label"));
            }
        }
        Ok(Self { text, kind })
    }

    fn matches(&self, name: &str) -> bool {
        match self.kind {
            Kind::Labels => parts_match(&self.text, name, '.'),
            Kind::Dns => parts_match(&self.text, &normalize_dns(name), '.'),
            Kind::Uri => uri_matches(&self.text, name),
        }
    }
}

/// A DNS name in the form patterns compare against: lowercase, no trailing dot.
fn normalize_dns(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Whether `name` matches `pattern` part by part, parts separated by `separator`.
fn parts_match(pattern: &str, name: &str, separator: char) -> bool {
    let mut pattern_parts = pattern.split(separator);
    let mut name_parts = name.split(separator);
    loop {
        match (pattern_parts.next(), name_parts.next()) {
            (Some(p), Some(n)) if glob(p, n) => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A URI pattern: path segments one by one; in `scheme://authority/...` the authority's
/// labels one by one, as for DNS names.
fn uri_matches(pattern: &str, uri: &str) -> bool {
    let mut pattern_parts = pattern.split('/');
    let mut uri_parts = uri.split('/');
    let mut index = 0;
    let mut hierarchical = false;
    loop {
        let (p, u) = match (pattern_parts.next(), uri_parts.next()) {
            (Some(p), Some(u)) => (p, u),
            (None, None) => return true,
            _ => return false,
        };
        let same = match index {
            1 => {
                hierarchical = p.is_empty() && u.is_empty();
                p == u
            }
            2 if hierarchical => parts_match(p, u, '.'),
            _ => glob(p, u),
        };
        if !same {
            return false;
        }
        index += 1;
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (the
/// caller has already split on the separators a `*` must not cross).
fn glob(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let Some(first) = pieces.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole text had to be `first`.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// A `--allow-spki` pin: `sha256//BASE64` or plain BASE64 of a 32-byte SHA-256.
fn parse_pin(text: &str) -> Result<[u8; 32], StartError> {
    let encoded = text.strip_prefix("sha256//").unwrap_or(text);
    let bytes = BASE64
        .decode(encoded.as_bytes())
        .or_else(|_| BASE64_NOPAD.decode(encoded.as_bytes()))
        .map_err(|_| {
            StartError::invalid(
                "--allow-spki",
                &printable(text),
                "expected sha256//BASE64: base64 of the SHA-256 of the SubjectPublicKeyInfo",
            )
        })?;
    bytes.try_into().map_err(|_| {
        StartError::invalid(
            "--allow-spki",
            &printable(text),
            "not a SHA-256 pin: it must decode to 32 bytes",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::Validity;

    fn peer() -> PeerIdentity {
        PeerIdentity {
            subject: "CN=web-1.prod".into(),
            common_names: vec!["web-1.prod".into()],
            org_units: vec!["payments".into()],
            dns_names: vec!["api.example.com".into(), "Db.Example.COM".into()],
            uris: vec!["spiffe://example.org/ns/prod/sa/billing".into()],
            spki_sha256: [7; 32],
            validity: Validity {
                not_before: 0,
                not_after: 1,
            },
        }
    }

    /// Adds a rule to a configuration.
    type AddRule = fn(&mut PolicyConfig, String);

    fn policy(build: impl FnOnce(&mut PolicyConfig)) -> Policy {
        let mut config = PolicyConfig::default();
        build(&mut config);
        Policy::parse(&config).expect("valid rules")
    }

    #[test]
    fn no_rule_lets_any_chained_certificate_in() {
        assert!(Policy::default().allows(&peer()));
    }

    #[test]
    fn a_star_stays_within_one_label() {
        for (pattern, name, expected) in [
            ("*.example.com", "api.example.com", true),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "example.com", false),
            ("api-*.example.com", "api-7.example.com", true),
            ("api-*.example.com", "api.example.com", false),
            ("*-db.example.com", "main-db.example.com", true),
            ("a*b*c.example", "axxbyyc.example", true),
            ("a*b*c.example", "acb.example", false),
            ("API.example.com.", "api.EXAMPLE.com", true),
            ("api.example.com", "api.example.com.", true),
            ("*", "localhost", true),
            ("*", "a.b", false),
        ] {
            let p = Pattern::parse("--allow-dns", pattern, Kind::Dns).unwrap();
            assert_eq!(p.matches(name), expected, "{pattern} vs {name}");
        }
    }

    #[test]
    fn cn_and_ou_compare_exactly_with_dot_separated_labels() {
        let p = Pattern::parse("--allow-cn", "web-*.prod", Kind::Labels).unwrap();
        assert!(p.matches("web-1.prod"));
        assert!(!p.matches("WEB-1.prod"));
        assert!(!p.matches("web-1.x.prod"));
    }

    #[test]
    fn a_star_stays_within_one_uri_segment() {
        for (pattern, uri, expected) in [
            (
                "spiffe://example.org/ns/prod/*",
                "spiffe://example.org/ns/prod/web",
                true,
            ),
            (
                "spiffe://example.org/ns/prod/*",
                "spiffe://example.org/ns/prod/sa/web",
                false,
            ),
            (
                "spiffe://example.org/ns/*/sa/web",
                "spiffe://example.org/ns/dev/sa/web",
                true,
            ),
            (
                "spiffe://*.example.org/x",
                "spiffe://eu.example.org/x",
                true,
            ),
            (
                "spiffe://*.example.org/x",
                "spiffe://a.eu.example.org/x",
                false,
            ),
            ("spiffe://example.org/*", "spiffe://example.org/", true),
            ("spiffe://example.org/x", "spiffe://example.org/X", false),
            ("spiffe:*", "spiffe://example.org", false),
        ] {
            let p = Pattern::parse("--allow-uri", pattern, Kind::Uri).unwrap();
            assert_eq!(p.matches(uri), expected, "{pattern} vs {uri}");
        }
    }

    #[test]
    fn each_rule_kind_lets_its_match_in_and_others_out() {
        let pin = format!("sha256//{}", BASE64.encode(&[7; 32]));
        let other_pin = BASE64_NOPAD.encode(&[8; 32]);
        let cases: [(AddRule, &str, &str); 5] = [
            (|c, p| c.allow_cn.push(p), "web-*.prod", "db-*.prod"),
            (|c, p| c.allow_ou.push(p), "payments", "Payments"),
            (|c, p| c.allow_dns.push(p), "*.EXAMPLE.com", "*.example.net"),
            (
                |c, p| c.allow_uri.push(p),
                "spiffe://example.org/ns/prod/sa/*",
                "spiffe://example.org/ns/dev/sa/*",
            ),
            (|c, p| c.allow_spki.push(p), &pin, &other_pin),
        ];
        for (add, allow, deny) in cases {
            let allowing = policy(|c| add(c, allow.to_owned()));
            assert!(allowing.check(&peer()).is_ok(), "{allow}");
            let denying = policy(|c| add(c, deny.to_owned()));
            let refusal = denying.check(&peer()).unwrap_err().to_string();
            assert!(
                refusal.contains("certificate has CN=\"web-1.prod\""),
                "{refusal}"
            );
        }
    }

    #[test]
    fn one_matching_rule_of_many_is_enough() {
        let p = policy(|c| {
            c.allow_cn.push("nobody".into());
            c.allow_dns.push("db.example.com".into());
        });
        assert!(p.allows(&peer()));
    }

    #[test]
    fn a_refusal_names_the_rule_flags_and_what_the_certificate_had() {
        let p = policy(|c| {
            c.allow_cn.push("nobody".into());
            c.allow_spki.push(BASE64.encode(&[1; 32]));
        });
        let text = p.check(&peer()).unwrap_err().to_string();
        assert!(
            text.contains("no --allow-cn/--allow-spki rule matches"),
            "{text}"
        );
        assert!(
            text.contains("DNS=\"api.example.com,Db.Example.COM\"")
                && text.contains("URI=\"spiffe://example.org/ns/prod/sa/billing\"")
                && text.contains(&format!("spki=sha256//{}", BASE64.encode(&[7; 32]))),
            "{text}"
        );
    }

    #[test]
    fn malformed_rules_are_refused_at_start_up() {
        let short_pin = BASE64.encode(&[1; 20]);
        let cases: [(AddRule, &str, &str); 5] = [
            (|c, p| c.allow_cn.push(p), "", "--allow-cn"),
            (|c, p| c.allow_dns.push(p), "a..example", "--allow-dns"),
            (|c, p| c.allow_uri.push(p), "spiffe://x/\n", "--allow-uri"),
            (
                |c, p| c.allow_spki.push(p),
                "sha256//not base64!",
                "--allow-spki",
            ),
            (|c, p| c.allow_spki.push(p), &short_pin, "--allow-spki"),
        ];
        for (add, rule, flag) in cases {
            let mut config = PolicyConfig::default();
            add(&mut config, rule.to_owned());
            let err = Policy::parse(&config).unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }
}
