//! Short-lived benchmark certificates: a CA, a server certificate and a client certificate,
//! all ECDSA P-256, written as PEM files into one directory.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::Result;

/// Where the generated files live.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub dir: PathBuf,
    /// CA certificate (trust anchor for both sides).
    pub ca: PathBuf,
    /// Server certificate chain (leaf only; the CA is the anchor).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Server certificate and key in one file, as HAProxy wants it.
    pub server_combined: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The DNS name in the server certificate; the load generator sends it as SNI.
pub const SERVER_NAME: &str = "localhost";

impl CertFiles {
    /// The file names used inside `dir`.
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            server_combined: dir.join("server-combined.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// Generates a fresh CA, server and client certificate into `dir` (created if missing).
pub fn generate(dir: &Path) -> Result<CertFiles> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files = CertFiles::in_dir(dir);
    let err = |what: &str, e: rcgen::Error| format!("cannot make the {what}: {e}");

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err("CA key", e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
    ca_params.distinguished_name = name("moat-bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(|e| err("CA", e))?;

    let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err("key", e))?;
        let mut params = CertificateParams::new(sans).map_err(|e| err(cn, e))?;
        params.distinguished_name = name(cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| err(cn, e))?;
        Ok::<_, String>((cert, key))
    };
    let (server, server_key) = leaf(
        "moat-bench server",
        vec![SERVER_NAME.to_string(), "127.0.0.1".to_string()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client, client_key) = leaf(
        "moat-bench client",
        vec!["client.moat-bench".to_string()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;

    write(&files.ca, &ca.pem())?;
    write(&files.server_cert, &server.pem())?;
    write(&files.server_key, &server_key.serialize_pem())?;
    write(
        &files.server_combined,
        &format!("{}{}", server.pem(), server_key.serialize_pem()),
    )?;
    write(&files.client_cert, &client.pem())?;
    write(&files.client_key, &client_key.serialize_pem())?;
    Ok(files)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
