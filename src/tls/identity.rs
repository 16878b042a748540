//! What a certificate says about who holds it: subject, names, public key, validity.
//!
//! The fields come from `x509-parser`, a maintained X.509 parser, because this code decides
//! who gets in. The bytes still come from the peer, so nothing here panics on them: a
//! certificate that cannot be parsed yields `None`. Values are kept as the certificate has
//! them, for matching; [`printable`] makes them safe for a log line.

use std::fmt::{self, Write as _};

use aws_lc_rs::digest;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    Oid, OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME, OID_X509_LOCALITY_NAME,
    OID_X509_ORGANIZATIONAL_UNIT, OID_X509_ORGANIZATION_NAME, OID_X509_STATE_OR_PROVINCE_NAME,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::AttributeTypeAndValue;

/// Longest text of one field kept for a log line.
const MAX_FIELD: usize = 200;

/// Longest list of names shown for one kind in a log line.
const MAX_NAMES_SHOWN: usize = 8;

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject as `O=acme,CN=billing` (the usual attributes, in the certificate's order),
    /// already made safe for a log line.
    pub subject: String,
    /// The subject's common names (CN), as written.
    pub common_names: Vec<String>,
    /// The subject's organizational units (OU), as written.
    pub org_units: Vec<String>,
    /// DNS names in the subject alternative names.
    pub dns_names: Vec<String>,
    /// URIs in the subject alternative names (SPIFFE IDs, for instance).
    pub uris: Vec<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo: what `--allow-spki` pins.
    pub spki_sha256: [u8; 32],
    /// When the certificate becomes valid and stops being valid.
    pub validity: Validity,
}

/// A validity window in UNIX seconds, both ends included (as webpki checks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: u64,
    /// notAfter.
    pub not_after: u64,
}

impl Validity {
    /// Whether `now` (UNIX seconds) lies within the window.
    pub fn contains(&self, now: u64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The window in which every one of `windows` is valid, or `None` if there is none.
    pub fn intersection(windows: impl IntoIterator<Item = Self>) -> Option<Self> {
        let mut windows = windows.into_iter();
        let first = windows.next()?;
        let both = windows.fold(first, |acc, w| Self {
            not_before: acc.not_before.max(w.not_before),
            not_after: acc.not_after.min(w.not_after),
        });
        (both.not_before <= both.not_after).then_some(both)
    }
}

/// Subject attributes named in [`PeerIdentity::subject`].
const SUBJECT_LABELS: [(&Oid<'static>, &str); 6] = [
    (&OID_X509_COMMON_NAME, "CN"),
    (&OID_X509_COUNTRY_NAME, "C"),
    (&OID_X509_LOCALITY_NAME, "L"),
    (&OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
    (&OID_X509_ORGANIZATION_NAME, "O"),
    (&OID_X509_ORGANIZATIONAL_UNIT, "OU"),
];

impl PeerIdentity {
    /// Reads a DER certificate; `None` if it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut identity = Self {
            subject: subject_of(&cert),
            common_names: Vec::new(),
            org_units: Vec::new(),
            dns_names: Vec::new(),
            uris: Vec::new(),
            spki_sha256: sha256(cert.public_key().raw),
            validity: validity_of(&cert)?,
        };
        for attribute in cert.subject().iter_attributes() {
            if attribute.attr_type() == &OID_X509_COMMON_NAME {
                identity.common_names.push(text_of(attribute));
            } else if attribute.attr_type() == &OID_X509_ORGANIZATIONAL_UNIT {
                identity.org_units.push(text_of(attribute));
            }
        }
        // A malformed or duplicated extension reads as no names: no name, no match.
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                    GeneralName::URI(uri) => identity.uris.push((*uri).to_owned()),
                    _ => {}
                }
            }
        }
        Some(identity)
    }

    /// What the certificate has, for a log line: `CN="billing" DNS=a.example,b.example`.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

/// [`PeerIdentity::summary`]: the names a certificate carries, safe for a log line.
#[derive(Debug)]
pub struct Summary<'a>(&'a PeerIdentity);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0;
        let kinds: [(&str, &[String]); 4] = [
            ("CN", &id.common_names),
            ("OU", &id.org_units),
            ("DNS", &id.dns_names),
            ("URI", &id.uris),
        ];
        let mut first = true;
        for (label, names) in kinds.iter().filter(|(_, names)| !names.is_empty()) {
            if !first {
                f.write_char(' ')?;
            }
            first = false;
            write!(f, "{label}=\"")?;
            for (i, name) in names.iter().take(MAX_NAMES_SHOWN).enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                f.write_str(&printable(name))?;
            }
            if names.len() > MAX_NAMES_SHOWN {
                write!(f, ",… {} more", names.len() - MAX_NAMES_SHOWN)?;
            }
            f.write_char('"')?;
        }
        if first {
            f.write_str("no CN, OU, DNS or URI name")?;
        }
        Ok(())
    }
}

/// The subject of a DER certificate as `CN=...,O=...`, safe for a log line; `None` if the
/// certificate cannot be parsed.
pub fn subject(der: &[u8]) -> Option<String> {
    X509Certificate::from_der(der)
        .ok()
        .map(|(_, cert)| subject_of(&cert))
}

/// The validity window of a DER certificate; `None` if it cannot be parsed or is not in
/// UNIX time.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    validity_of(&cert)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Text from a peer made safe for one log line: control characters (which could forge log
/// lines or move a terminal's cursor) become `?`, quotes become `'`, and the length is
/// capped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_FIELD + 3));
    for (count, c) in text.chars().enumerate() {
        if count == MAX_FIELD {
            out.push('…');
            break;
        }
        out.push(match c {
            c if c.is_control() => '?',
            '"' => '\'',
            c => c,
        });
    }
    out
}

fn subject_of(cert: &X509Certificate<'_>) -> String {
    let mut parts = Vec::new();
    for attribute in cert.subject().iter_attributes() {
        let label = SUBJECT_LABELS
            .iter()
            .find(|(oid, _)| attribute.attr_type() == *oid);
        if let Some((_, label)) = label {
            parts.push(format!("{label}={}", text_of(attribute)));
        }
    }
    printable(&parts.join(","))
}

/// An attribute's value as text: the string types as they are, anything else (such as
/// BMPString) as lossy UTF-8, which matches no pattern a person would write.
fn text_of(attribute: &AttributeTypeAndValue<'_>) -> String {
    match attribute.as_str() {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(attribute.as_slice()).into_owned(),
    }
}

fn validity_of(cert: &X509Certificate<'_>) -> Option<Validity> {
    let window = cert.validity();
    Some(Validity {
        not_before: u64::try_from(window.not_before.timestamp()).ok()?,
        not_after: u64::try_from(window.not_after.timestamp()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_panics() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x05],
        ] {
            assert_eq!(subject(input), None);
            assert_eq!(PeerIdentity::from_der(input), None);
        }
    }

    #[test]
    fn control_characters_and_quotes_are_replaced_and_length_capped() {
        assert_eq!(printable("a\nb\x1b\"c"), "a?b?'c");
        let long = "x".repeat(1000);
        assert_eq!(printable(&long).chars().count(), MAX_FIELD + 1);
    }

    #[test]
    fn validity_windows_intersect() {
        let w = |not_before, not_after| Validity {
            not_before,
            not_after,
        };
        assert_eq!(
            Validity::intersection([w(10, 100), w(20, 90), w(5, 95)]),
            Some(w(20, 90))
        );
        assert_eq!(Validity::intersection([w(10, 20), w(30, 40)]), None);
        assert_eq!(Validity::intersection([]), None);
        assert!(w(10, 20).contains(10) && w(10, 20).contains(20) && !w(10, 20).contains(21));
    }
}
