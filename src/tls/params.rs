//! How TLS is negotiated: protocol versions, cipher suites and key exchange groups.
//!
//! Defaults are chosen for speed without giving up safety: TLS 1.3 and 1.2, AEAD suites with
//! ECDHE only (all rustls has), and moat's own suite order with AES-128-GCM first. OpenSSL,
//! curl, redis-cli and psql offer AES-256-GCM-SHA384 first; its SHA-384 key schedule has no
//! hardware help on common CPUs, so server mode follows its own order, not the client's.
//! Key exchange prefers the post-quantum hybrid X25519MLKEM768: client mode offers it first
//! (with its key share), and a server takes groups in the client's order, so every client
//! that lists the hybrid first gets it without a HelloRetryRequest.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{
    cipher_suite as suite, kx_group, ALL_CIPHER_SUITES, ALL_KX_GROUPS,
};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::{TlsParams, TlsVersion};
use crate::error::StartError;

/// moat's suite order: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305, for TLS 1.3 and then
/// for TLS 1.2 (ECDSA certificates, then RSA).
pub const SUITE_ORDER: [SupportedCipherSuite; 9] = [
    suite::TLS13_AES_128_GCM_SHA256,
    suite::TLS13_AES_256_GCM_SHA384,
    suite::TLS13_CHACHA20_POLY1305_SHA256,
    suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// moat's key exchange groups, most preferred first.
pub const GROUP_ORDER: [&dyn SupportedKxGroup; 4] = [
    kx_group::X25519MLKEM768,
    kx_group::X25519,
    kx_group::SECP256R1,
    kx_group::SECP384R1,
];

/// A crypto provider and the protocol versions to enable with it.
#[derive(Debug)]
pub struct Negotiation {
    /// aws-lc-rs with the chosen suites and groups, in order.
    pub provider: Arc<CryptoProvider>,
    /// TLS 1.3, and TLS 1.2 unless `--min-tls 1.3` (or no TLS 1.2 suite is left).
    pub versions: Vec<&'static SupportedProtocolVersion>,
}

/// Builds the provider and versions `params` ask for; unknown names are errors naming the
/// flag and listing what is known.
pub fn negotiation(params: &TlsParams) -> Result<Negotiation, StartError> {
    let cipher_suites = match &params.ciphers {
        Some(names) => names
            .iter()
            .map(|name| cipher_suite(name))
            .collect::<Result<Vec<_>, _>>()?,
        None => SUITE_ORDER.to_vec(),
    };
    let kx_groups = match &params.groups {
        Some(names) => names
            .iter()
            .map(|name| group(name))
            .collect::<Result<Vec<_>, _>>()?,
        None => GROUP_ORDER.to_vec(),
    };
    let mut versions = vec![&rustls::version::TLS13];
    if params.min_version <= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    // A version without a suite is off; none at all is a mistake worth naming.
    versions.retain(|v| cipher_suites.iter().any(|s| s.version() == *v));
    if versions.is_empty() {
        let value = params.ciphers.as_deref().unwrap_or_default().join(",");
        return Err(StartError::invalid(
            "--ciphers",
            &value,
            "no suite of a TLS version that --min-tls allows",
        ));
    }
    let provider = CryptoProvider {
        cipher_suites,
        kx_groups,
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    Ok(Negotiation {
        provider: Arc::new(provider),
        versions,
    })
}

/// A suite by its rustls name (`TLS13_AES_128_GCM_SHA256`) or IANA name
/// (`TLS_AES_128_GCM_SHA256`), in any case.
fn cipher_suite(name: &str) -> Result<SupportedCipherSuite, StartError> {
    ALL_CIPHER_SUITES
        .iter()
        .find(|s| suite_names(s).iter().any(|n| n.eq_ignore_ascii_case(name)))
        .copied()
        .ok_or_else(|| {
            let known: Vec<String> = SUITE_ORDER.iter().map(suite_name).collect();
            StartError::invalid(
                "--ciphers",
                name,
                format!("unknown cipher suite; known: {}", known.join(", ")),
            )
        })
}

/// A group by its rustls name (`X25519MLKEM768`, `secp256r1`) or its curve name (`P-256`),
/// in any case.
fn group(name: &str) -> Result<&'static dyn SupportedKxGroup, StartError> {
    let alias = match name.to_ascii_uppercase().as_str() {
        "P-256" | "P256" => "secp256r1",
        "P-384" | "P384" => "secp384r1",
        _ => name,
    };
    ALL_KX_GROUPS
        .iter()
        .find(|g| group_name(**g).eq_ignore_ascii_case(alias))
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = ALL_KX_GROUPS.iter().map(|g| group_name(*g)).collect();
            StartError::invalid(
                "--groups",
                name,
                format!("unknown key exchange group; known: {}", known.join(", ")),
            )
        })
}

/// The name moat shows for a suite: rustls' (which IANA's differs from only for TLS 1.3).
pub fn suite_name(suite: &SupportedCipherSuite) -> String {
    let id = suite.suite();
    id.as_str().map_or_else(|| format!("{id:?}"), str::to_owned)
}

/// The name moat shows for a group.
pub fn group_name(group: &dyn SupportedKxGroup) -> &'static str {
    group.name().as_str().unwrap_or("unknown")
}

/// The names a suite answers to: rustls' and IANA's.
fn suite_names(suite: &SupportedCipherSuite) -> [String; 2] {
    let rustls_name = suite_name(suite);
    let iana = match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => rustls_name.clone(),
    };
    [rustls_name, iana]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ciphers: Option<&str>, groups: Option<&str>, min: TlsVersion) -> TlsParams {
        let list = |t: &str| t.split(',').map(String::from).collect();
        TlsParams {
            min_version: min,
            ciphers: ciphers.map(list),
            groups: groups.map(list),
        }
    }

    #[test]
    fn defaults_are_moats_order_with_both_versions() {
        let n = negotiation(&TlsParams::default()).unwrap();
        let names: Vec<String> = n.provider.cipher_suites.iter().map(suite_name).collect();
        assert_eq!(
            names[..3],
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256"
            ]
        );
        assert_eq!(names[3], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        let groups: Vec<&str> = n
            .provider
            .kx_groups
            .iter()
            .map(|g| group_name(*g))
            .collect();
        assert_eq!(
            groups,
            ["X25519MLKEM768", "X25519", "secp256r1", "secp384r1"]
        );
        assert_eq!(n.versions.len(), 2);
        let n = negotiation(&params(None, None, TlsVersion::Tls13)).unwrap();
        assert_eq!(n.versions, [&rustls::version::TLS13]);
    }

    #[test]
    fn names_are_taken_in_either_spelling_and_any_case() {
        let n = negotiation(&params(
            Some("tls_aes_256_gcm_sha384,TLS13_AES_128_GCM_SHA256"),
            Some("p-256,x25519"),
            TlsVersion::Tls12,
        ))
        .unwrap();
        let names: Vec<String> = n.provider.cipher_suites.iter().map(suite_name).collect();
        assert_eq!(
            names,
            ["TLS13_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256"]
        );
        let groups: Vec<&str> = n
            .provider
            .kx_groups
            .iter()
            .map(|g| group_name(*g))
            .collect();
        assert_eq!(groups, ["secp256r1", "X25519"]);
        // No TLS 1.2 suite in the list: TLS 1.2 is off.
        assert_eq!(n.versions, [&rustls::version::TLS13]);
    }

    #[test]
    fn unknown_names_and_empty_versions_are_errors() {
        let err = negotiation(&params(
            Some("TLS_RSA_WITH_RC4_128_MD5"),
            None,
            TlsVersion::Tls12,
        ));
        let text = err.unwrap_err().to_string();
        assert!(
            text.contains("--ciphers") && text.contains("known: TLS13_AES_128"),
            "{text}"
        );
        let err = negotiation(&params(None, Some("ffdhe2048"), TlsVersion::Tls12));
        assert!(err.unwrap_err().to_string().contains("--groups"));
        let only12 = Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        let err = negotiation(&params(only12, None, TlsVersion::Tls13));
        assert!(err.unwrap_err().to_string().contains("--min-tls"));
    }
}
