//! Fresh certificates for every test run, made with rcgen, written to a private directory.
//!
//! Nothing here can expire under CI: every run makes its own CA and leaves, valid from
//! yesterday to next year — except the deliberately expired client certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A directory of PEM files: a CA, a server certificate for localhost/127.0.0.1/::1,
/// a good client certificate, one from another CA and an expired one.
pub struct Pki {
    pub dir: PathBuf,
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
        Self { dir }
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
