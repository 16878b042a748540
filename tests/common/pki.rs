//! Fresh certificates for every test run, made with rcgen, written to a private directory.
//!
//! Nothing here can expire under CI: every run makes its own CA and leaves, valid from
//! yesterday to next year — except the deliberately expired client certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm,
};

/// A directory of PEM files: a CA, a server certificate for localhost/127.0.0.1/::1,
/// a good client certificate, one from another CA and an expired one. [`Pki::issue`] adds
/// more, signed by the same CA.
pub struct Pki {
    pub dir: PathBuf,
    ca: Ca,
}

/// What a certificate made by [`Pki::issue`] says. `Spec::client("name")` is a client
/// certificate with that common name and nothing else; set the other fields as needed.
#[derive(Clone)]
pub struct Spec {
    pub cn: String,
    pub ou: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub key: KeyKind,
    /// Server certificate (serverAuth, with localhost/127.0.0.1/::1 added), or client.
    pub server: bool,
    /// The serial number, for a CRL to name.
    pub serial: Option<u64>,
}

/// The kind of key a certificate gets.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

impl Spec {
    pub fn client(cn: &str) -> Self {
        Self {
            cn: cn.into(),
            ou: None,
            dns: Vec::new(),
            uris: Vec::new(),
            key: KeyKind::EcdsaP256,
            server: false,
            serial: None,
        }
    }

    pub fn server(dns: &[&str]) -> Self {
        Self {
            dns: dns.iter().map(|d| d.to_string()).collect(),
            server: true,
            ..Self::client(dns.first().copied().unwrap_or("server"))
        }
    }
}

impl KeyKind {
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// One certificate and key on disk.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Pki {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "moat-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = make_ca("moat test CA");
        let other_ca = make_ca("some other CA");
        write(&dir, "ca.pem", &ca.0);
        write(&dir, "other-ca.pem", &other_ca.0);
        leaf(&dir, "server", "localhost", &ca, Validity::Current, true);
        leaf(&dir, "client", "test-client", &ca, Validity::Current, false);
        leaf(
            &dir,
            "stranger",
            "stranger",
            &other_ca,
            Validity::Current,
            false,
        );
        leaf(
            &dir,
            "expired",
            "expired-client",
            &ca,
            Validity::Expired,
            false,
        );
        Self { dir, ca }
    }

    /// Writes `NAME.pem` and `NAME.key`: a certificate as `spec` says, signed by the test CA.
    /// Returns the `--allow-spki` pin of its key (`sha256//BASE64`).
    pub fn issue(&self, name: &str, spec: &Spec) -> String {
        let key = KeyPair::generate_for(spec.key.algorithm()).expect("leaf key");
        let mut sans: Vec<SanType> = Vec::new();
        let mut dns = spec.dns.clone();
        if spec.server {
            dns.push("localhost".into());
        }
        for name in &dns {
            sans.push(SanType::DnsName(name.clone().try_into().expect("DNS SAN")));
        }
        for uri in &spec.uris {
            sans.push(SanType::URI(uri.clone().try_into().expect("URI SAN")));
        }
        if spec.server {
            sans.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
            sans.push(SanType::IpAddress("::1".parse().unwrap()));
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let mut dn = dn(&spec.cn);
        if let Some(ou) = &spec.ou {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![if spec.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.serial_number = spec.serial.map(SerialNumber::from);
        set_validity(&mut params, Validity::Current);
        let cert = params.signed_by(&key, &self.ca.1).expect("sign leaf");
        write(&self.dir, &format!("{name}.pem"), &cert.pem());
        write(&self.dir, &format!("{name}.key"), &key.serialize_pem());
        let hash =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key.subject_public_key_info());
        format!("sha256//{}", data_encoding::BASE64.encode(hash.as_ref()))
    }

    /// Writes `NAME` (PEM), a CRL of the test CA revoking `serials`, whose nextUpdate is
    /// `next_update` from now (negative: in the past). Returns its path as a string.
    pub fn crl(&self, name: &str, serials: &[u64], next_update_secs: i64) -> String {
        let now = SystemTime::now();
        let next = if next_update_secs >= 0 {
            now + Duration::from_secs(next_update_secs as u64)
        } else {
            now - Duration::from_secs(next_update_secs.unsigned_abs())
        };
        let this_update = next.min(now) - Duration::from_secs(86_400);
        let params = CertificateRevocationListParams {
            this_update: this_update.into(),
            next_update: next.into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: this_update.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca.1).expect("sign CRL");
        write(&self.dir, name, &crl.pem().expect("CRL PEM"));
        self.s(name)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `ca.pem` as a string, for `--client-ca` / `--ca`.
    pub fn ca(&self) -> String {
        self.s("ca.pem")
    }

    pub fn s(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    pub fn identity(&self, name: &str) -> Identity {
        Identity {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }

    /// Arguments for a server-mode moat in front of `target`, requiring client certificates.
    pub fn server_args(&self, target: &str) -> Vec<String> {
        [
            "server",
            "--listen",
            "127.0.0.1:0",
            "--target",
            target,
            "--cert",
            &self.s("server.pem"),
            "--key",
            &self.s("server.key"),
            "--client-ca",
            &self.ca(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Arguments for a client-mode moat towards `target`, presenting the good client certificate.
    pub fn client_args(&self, target: &str) -> Vec<String> {
        [
            "client",
            "--listen",
            "127.0.0.1:0",
            "--target",
            target,
            "--ca",
            &self.ca(),
            "--cert",
            &self.s("client.pem"),
            "--key",
            &self.s("client.key"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Validity {
    Current,
    Expired,
}

type Ca = (String, Issuer<'static, KeyPair>);

fn make_ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("ca key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, Validity::Current);
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(dir: &Path, file: &str, name: &str, ca: &Ca, validity: Validity, server: bool) {
    let key = KeyPair::generate().expect("leaf key");
    let sans = if server {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        vec![]
    };
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name = dn(name);
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    set_validity(&mut params, validity);
    let cert = params.signed_by(&key, &ca.1).expect("sign leaf");
    write(dir, &format!("{file}.pem"), &cert.pem());
    write(dir, &format!("{file}.key"), &key.serialize_pem());
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "moat tests");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let (from, to) = match validity {
        Validity::Current => (now - day, now + 365 * day),
        Validity::Expired => (now - 30 * day, now - 2 * day),
    };
    params.not_before = from.into();
    params.not_after = to.into();
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write pem");
}
