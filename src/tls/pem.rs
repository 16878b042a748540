//! PEM input, from a file or built into the binary, with errors that name the flag and file.
//! (A CRL may also be DER.)

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::StartError;

/// The contents of one PEM file and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pem {
    flag: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Pem {
    /// Reads the file named by `flag`.
    pub fn read(flag: &'static str, path: &Path) -> Result<Self, StartError> {
        let bytes = std::fs::read(path).map_err(|source| StartError::ReadFile {
            flag,
            path: path.into(),
            source,
        })?;
        Ok(Self {
            flag,
            path: path.into(),
            bytes,
        })
    }

    /// PEM text built into the binary; `name` stands in for a path in messages.
    pub fn embedded(flag: &'static str, name: &str, text: &str) -> Self {
        Self {
            flag,
            path: PathBuf::from(format!("(built-in {name})")),
            bytes: text.as_bytes().to_vec(),
        }
    }

    /// Where the PEM came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every certificate in the file, in order; an error if there is none.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, StartError> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.bad(format!("malformed PEM: {}", describe(&e))))?;
        if certs.is_empty() {
            return Err(
                self.bad("no certificate found (expected a '-----BEGIN CERTIFICATE-----' block)")
            );
        }
        Ok(certs)
    }

    /// The first private key in the file (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, StartError> {
        if self.has("ENCRYPTED PRIVATE KEY") || self.has("Proc-Type: 4,ENCRYPTED") {
            return Err(self.bad(
                "the key is encrypted; moat needs it unencrypted \
                 (openssl pkey -in KEY -out PLAIN-KEY writes such a copy)",
            ));
        }
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            pem::Error::NoItemsFound if self.has("-----BEGIN DSA PRIVATE KEY") => {
                self.bad(format!("DSA keys are not supported; {SUPPORTED_KEYS}"))
            }
            pem::Error::NoItemsFound => self
                .bad("no private key found (expected a '-----BEGIN ... PRIVATE KEY-----' block)"),
            other => self.bad(format!("malformed PEM: {}", describe(&other))),
        })
    }

    /// Every CRL in the file: PEM `X509 CRL` blocks, or one DER CRL.
    pub fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, StartError> {
        if !self.has("-----BEGIN") {
            return Ok(vec![CertificateRevocationListDer::from(self.bytes.clone())]);
        }
        let crls = CertificateRevocationListDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.bad(format!("malformed PEM: {}", describe(&e))))?;
        if crls.is_empty() {
            return Err(self.bad("no CRL found (expected a '-----BEGIN X509 CRL-----' block)"));
        }
        Ok(crls)
    }

    fn has(&self, text: &str) -> bool {
        self.bytes
            .windows(text.len())
            .any(|window| window == text.as_bytes())
    }

    /// An error about this file's contents.
    pub fn bad(&self, reason: impl Into<String>) -> StartError {
        StartError::BadFile {
            flag: self.flag,
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
}

/// The certificate keys moat can sign with, for error messages.
pub const SUPPORTED_KEYS: &str = "use ECDSA P-256 or P-384, RSA of 2048 bits or more, or Ed25519";

fn describe(err: &pem::Error) -> String {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "bad base64 inside a section".into(),
        other => other.to_string(),
    }
}
