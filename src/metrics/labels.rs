//! The label values moat exports, each a closed set fixed when moat is built, so no peer
//! can add a series: how tunnels end, why handshakes fail, which cap refused a connection,
//! which deadline fired, and which TLS version, cipher suite, key-exchange group and ALPN
//! protocol a handshake settled on.

use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

use super::instrument::Label;
use crate::timer::TimerClass;
use crate::tunnel::EndReason;

/// The label value for anything outside a known list.
pub const OTHER: &str = "other";

/// How a tunnel ended, as the `end` label of `moat_tunnels_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Both directions finished.
    Clean,
    /// Both directions finished, but a TLS peer closed TCP without `close_notify`.
    Truncated,
    /// The TLS handshake did not finish in time.
    HandshakeTimeout,
    /// The target did not answer the connect in time.
    ConnectTimeout,
    /// No byte moved for the idle timeout.
    IdleTimeout,
    /// A half-closed tunnel stayed quiet for the close timeout.
    CloseTimeout,
    /// moat was shutting down and the shutdown timeout passed.
    Shutdown,
    /// Evicted from the full handshake budget.
    Evicted,
    /// The TLS session failed for a reason not counted apart.
    TlsError,
    /// TCP EOF in the middle of a TLS handshake.
    HandshakeEof,
    /// No target address could be reached.
    ConnectError,
    /// A socket failed (reset, broken pipe).
    IoError,
    /// The peer's certificate was valid but the allow-list refused it.
    RefusedPolicy,
    /// The peer's certificate has been revoked.
    Revoked,
    /// A PROXY protocol header was missing or malformed.
    ProxyHeaderError,
}

impl TunnelEnd {
    /// Every value, in the order they are rendered.
    pub const ALL: [Self; 15] = [
        Self::Clean,
        Self::Truncated,
        Self::HandshakeTimeout,
        Self::ConnectTimeout,
        Self::IdleTimeout,
        Self::CloseTimeout,
        Self::Shutdown,
        Self::Evicted,
        Self::TlsError,
        Self::HandshakeEof,
        Self::ConnectError,
        Self::IoError,
        Self::RefusedPolicy,
        Self::Revoked,
        Self::ProxyHeaderError,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Truncated => "truncated",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::CloseTimeout => "close_timeout",
            Self::Shutdown => "shutdown",
            Self::Evicted => "evicted",
            Self::TlsError => "tls_error",
            Self::HandshakeEof => "handshake_eof",
            Self::ConnectError => "connect_error",
            Self::IoError => "io_error",
            Self::RefusedPolicy => "refused_policy",
            Self::Revoked => "revoked",
            Self::ProxyHeaderError => "proxy_header_error",
        }
    }

    /// The value for a tunnel that ended for `reason`.
    pub fn of(reason: &EndReason) -> Self {
        match reason {
            EndReason::Clean => Self::Clean,
            EndReason::Truncated(_) => Self::Truncated,
            EndReason::Timeout(TimerClass::Handshake) => Self::HandshakeTimeout,
            EndReason::Timeout(TimerClass::Connect) => Self::ConnectTimeout,
            EndReason::Timeout(TimerClass::Idle) => Self::IdleTimeout,
            EndReason::Timeout(TimerClass::Close) => Self::CloseTimeout,
            // A lingering end's deadline ends no tunnel: its line was written before.
            EndReason::Timeout(TimerClass::Linger) => Self::TlsError,
            EndReason::Timeout(TimerClass::Proxy) => Self::ProxyHeaderError,
            EndReason::Shutdown => Self::Shutdown,
            EndReason::Evicted => Self::Evicted,
            EndReason::Tls(_, e) => match certificate_refusal(e) {
                Some(CertificateRefusal::Policy) => Self::RefusedPolicy,
                Some(CertificateRefusal::Revoked) => Self::Revoked,
                None => Self::TlsError,
            },
            EndReason::Refused(..) => Self::RefusedPolicy,
            EndReason::HandshakeEof(_) => Self::HandshakeEof,
            EndReason::Connect(_) => Self::ConnectError,
            EndReason::Io(..) => Self::IoError,
            EndReason::ProxyHeader(_) => Self::ProxyHeaderError,
            EndReason::TooManyFromPeer => Self::RefusedPolicy,
        }
    }
}

impl Label for TunnelEnd {
    const NAME: &'static str = "end";
    const SLOTS: usize = Self::ALL.len();
    fn slot(self) -> usize {
        self as usize
    }
    fn slot_label(slot: usize) -> &'static str {
        Self::ALL.get(slot).map_or(OTHER, |v| v.as_label())
    }
}

/// Why a TLS handshake failed, as the `reason` label of `moat_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// moat found fault with the peer and sent it an alert.
    AlertSent,
    /// The peer sent moat a fatal alert.
    AlertReceived,
    /// The handshake deadline passed.
    Timeout,
    /// The peer's certificate was valid but the allow-list refused it.
    Policy,
    /// The peer's certificate has been revoked.
    Revoked,
    /// The peer closed TCP mid-handshake.
    Eof,
    /// Anything else: a socket error, eviction, shutdown.
    Other,
}

impl HandshakeFailure {
    /// Every value, in the order they are rendered.
    pub const ALL: [Self; 7] = [
        Self::AlertSent,
        Self::AlertReceived,
        Self::Timeout,
        Self::Policy,
        Self::Revoked,
        Self::Eof,
        Self::Other,
    ];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::AlertSent => "alert_sent",
            Self::AlertReceived => "alert_received",
            Self::Timeout => "timeout",
            Self::Policy => "policy",
            Self::Revoked => "revoked",
            Self::Eof => "eof",
            Self::Other => OTHER,
        }
    }

    /// The value for a tunnel that ended for `reason` while a handshake was under way.
    pub fn of(reason: &EndReason) -> Self {
        match reason {
            EndReason::Tls(_, e) => Self::of_tls(e),
            EndReason::Refused(..) => Self::Policy,
            EndReason::Timeout(TimerClass::Handshake) => Self::Timeout,
            EndReason::HandshakeEof(_) => Self::Eof,
            _ => Self::Other,
        }
    }

    /// The value for a handshake that rustls failed with `error`. Every error rustls raises
    /// for the peer's messages is answered with an alert, so all but a received alert and
    /// the two certificate refusals count as "alert sent".
    pub fn of_tls(error: &rustls::Error) -> Self {
        match (error, certificate_refusal(error)) {
            (_, Some(CertificateRefusal::Policy)) => Self::Policy,
            (_, Some(CertificateRefusal::Revoked)) => Self::Revoked,
            (rustls::Error::AlertReceived(_), None) => Self::AlertReceived,
            _ => Self::AlertSent,
        }
    }
}

impl Label for HandshakeFailure {
    const NAME: &'static str = "reason";
    const SLOTS: usize = Self::ALL.len();
    fn slot(self) -> usize {
        self as usize
    }
    fn slot_label(slot: usize) -> &'static str {
        Self::ALL.get(slot).map_or(OTHER, |v| v.as_label())
    }
}

enum CertificateRefusal {
    Policy,
    Revoked,
}

/// Whether `error` is a certificate that verified but was refused: revoked (a CRL named
/// it), or turned away by moat's allow-list, which refuses with
/// `CertificateError::ApplicationVerificationFailure` (sent as an `access_denied` alert).
fn certificate_refusal(error: &rustls::Error) -> Option<CertificateRefusal> {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(C::Revoked) => Some(CertificateRefusal::Revoked),
        rustls::Error::InvalidCertificate(C::ApplicationVerificationFailure) => {
            Some(CertificateRefusal::Policy)
        }
        _ => None,
    }
}

/// Which cap turned a connection away, as the `cap` label of `moat_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-conns` was reached and accepting stopped (clients wait in the backlog).
    MaxConns,
    /// The source address already had `--max-conns-per-ip` tunnels.
    PerIp,
    /// A stalled handshake was evicted to make room in `--max-handshakes`.
    HandshakeBudgetEviction,
}

impl Refusal {
    /// Every value, in the order they are rendered.
    pub const ALL: [Self; 3] = [Self::MaxConns, Self::PerIp, Self::HandshakeBudgetEviction];

    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::MaxConns => "max_conns",
            Self::PerIp => "per_ip",
            Self::HandshakeBudgetEviction => "handshake_budget_eviction",
        }
    }
}

impl Label for Refusal {
    const NAME: &'static str = "cap";
    const SLOTS: usize = Self::ALL.len();
    fn slot(self) -> usize {
        self as usize
    }
    fn slot_label(slot: usize) -> &'static str {
        Self::ALL.get(slot).map_or(OTHER, |v| v.as_label())
    }
}

/// Which way plaintext crossed a tunnel, as the `direction` label of
/// `moat_plaintext_bytes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the target.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

impl Label for Direction {
    const NAME: &'static str = "direction";
    const SLOTS: usize = 2;
    fn slot(self) -> usize {
        self as usize
    }
    fn slot_label(slot: usize) -> &'static str {
        ["to_target", "to_client"]
            .get(slot)
            .copied()
            .unwrap_or(OTHER)
    }
}

/// How a configuration reload went, as the `result` label of `moat_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration is in force.
    Ok,
    /// The new configuration was refused; the old one stays.
    Failed,
}

impl Label for ReloadResult {
    const NAME: &'static str = "result";
    const SLOTS: usize = 2;
    fn slot(self) -> usize {
        self as usize
    }
    fn slot_label(slot: usize) -> &'static str {
        ["ok", "failed"].get(slot).copied().unwrap_or(OTHER)
    }
}

/// The deadlines, as the `kind` label of `moat_timeouts_total`.
const TIMER_CLASSES: [TimerClass; 6] = [
    TimerClass::Handshake,
    TimerClass::Connect,
    TimerClass::Idle,
    TimerClass::Close,
    TimerClass::Linger,
    TimerClass::Proxy,
];

impl Label for TimerClass {
    const NAME: &'static str = "kind";
    const SLOTS: usize = TIMER_CLASSES.len();
    fn slot(self) -> usize {
        match self {
            Self::Handshake => 0,
            Self::Connect => 1,
            Self::Idle => 2,
            Self::Close => 3,
            Self::Linger => 4,
            Self::Proxy => 5,
        }
    }
    fn slot_label(slot: usize) -> &'static str {
        match TIMER_CLASSES.get(slot) {
            Some(Self::Proxy) => "proxy",
            Some(class) => class.name(),
            None => OTHER,
        }
    }
}

/// TLS versions moat can negotiate, as the `version` label (rustls' names).
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::TLSv1_2, ProtocolVersion::TLSv1_3];

/// Cipher suites of rustls' aws-lc-rs provider, as the `suite` label (rustls' names).
const SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Key-exchange groups, classical and post-quantum hybrid, as the `group` label (rustls'
/// names), so the share of post-quantum handshakes can be read off.
const GROUPS: [NamedGroup; 9] = [
    NamedGroup::X25519,
    NamedGroup::secp256r1,
    NamedGroup::secp384r1,
    NamedGroup::secp521r1,
    NamedGroup::X25519MLKEM768,
    NamedGroup::secp256r1MLKEM768,
    NamedGroup::MLKEM512,
    NamedGroup::MLKEM768,
    NamedGroup::MLKEM1024,
];

/// Slot of `value` in `known`, or the `other` slot after them.
fn slot_in<T: PartialEq>(known: &[T], value: &T) -> usize {
    known.iter().position(|k| k == value).unwrap_or(known.len())
}

/// rustls' name for a known value, or `other`.
fn rustls_name(name: Option<&'static str>) -> &'static str {
    name.unwrap_or(OTHER)
}

impl Label for ProtocolVersion {
    const NAME: &'static str = "version";
    const SLOTS: usize = VERSIONS.len() + 1;
    fn slot(self) -> usize {
        slot_in(&VERSIONS, &self)
    }
    fn slot_label(slot: usize) -> &'static str {
        rustls_name(VERSIONS.get(slot).and_then(|v| v.as_str()))
    }
}

impl Label for CipherSuite {
    const NAME: &'static str = "suite";
    const SLOTS: usize = SUITES.len() + 1;
    fn slot(self) -> usize {
        slot_in(&SUITES, &self)
    }
    fn slot_label(slot: usize) -> &'static str {
        rustls_name(SUITES.get(slot).and_then(|v| v.as_str()))
    }
}

impl Label for NamedGroup {
    const NAME: &'static str = "group";
    const SLOTS: usize = GROUPS.len() + 1;
    fn slot(self) -> usize {
        slot_in(&GROUPS, &self)
    }
    fn slot_label(slot: usize) -> &'static str {
        rustls_name(GROUPS.get(slot).and_then(|v| v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_has_its_own_slot_in_declaration_order() {
        fn check<L: Label + std::fmt::Debug>(all: &[L]) {
            assert_eq!(all.len(), L::SLOTS);
            for (i, value) in all.iter().enumerate() {
                assert_eq!(value.slot(), i, "{value:?}");
            }
        }
        check(&TunnelEnd::ALL);
        check(&HandshakeFailure::ALL);
        check(&Refusal::ALL);
        check(&TIMER_CLASSES);
        check(&[Direction::ToTarget, Direction::ToClient]);
        check(&[ReloadResult::Ok, ReloadResult::Failed]);
        assert_eq!(TunnelEnd::Revoked.as_label(), TunnelEnd::slot_label(13));
    }

    #[test]
    fn rustls_values_map_to_their_names_or_other() {
        let label = |slot| <NamedGroup as Label>::slot_label(slot);
        assert_eq!(label(NamedGroup::X25519MLKEM768.slot()), "X25519MLKEM768");
        assert_eq!(label(NamedGroup::Unknown(0x1234).slot()), OTHER);
        assert_eq!(label(NamedGroup::FFDHE2048.slot()), OTHER);
        let version = |v: ProtocolVersion| <ProtocolVersion as Label>::slot_label(v.slot());
        assert_eq!(version(ProtocolVersion::TLSv1_3), "TLSv1_3");
        assert_eq!(version(ProtocolVersion::SSLv3), OTHER);
        for slot in 0..<CipherSuite as Label>::SLOTS - 1 {
            assert!(<CipherSuite as Label>::slot_label(slot).starts_with("TLS"));
        }
    }

    #[test]
    fn end_reasons_and_handshake_failures_classify_certificate_refusals() {
        use crate::tunnel::Side;
        let revoked = rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
        let refused = rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        );
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(
            TunnelEnd::of(&EndReason::Tls(Side::Client, revoked.clone())),
            TunnelEnd::Revoked
        );
        assert_eq!(
            TunnelEnd::of(&EndReason::Tls(Side::Client, refused.clone())),
            TunnelEnd::RefusedPolicy
        );
        assert_eq!(
            HandshakeFailure::of_tls(&revoked),
            HandshakeFailure::Revoked
        );
        assert_eq!(HandshakeFailure::of_tls(&refused), HandshakeFailure::Policy);
        assert_eq!(
            HandshakeFailure::of_tls(&alert),
            HandshakeFailure::AlertReceived
        );
        assert_eq!(
            HandshakeFailure::of_tls(&rustls::Error::NoCertificatesPresented),
            HandshakeFailure::AlertSent
        );
        assert_eq!(
            HandshakeFailure::of(&EndReason::Timeout(TimerClass::Handshake)),
            HandshakeFailure::Timeout
        );
        assert_eq!(
            TunnelEnd::of(&EndReason::Timeout(TimerClass::Close)),
            TunnelEnd::CloseTimeout
        );
    }
}
