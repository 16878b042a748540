//! What `--trace` says about TLS: the state rustls' unbuffered API is in, and the records
//! that went in and out, with the handshake messages that are still readable.

/// The name of a state of rustls' unbuffered API, for `--trace`.
pub(super) fn state_name<Data>(
    state: &Result<rustls::unbuffered::ConnectionState<'_, '_, Data>, rustls::Error>,
) -> String {
    use rustls::unbuffered::ConnectionState as S;
    match state {
        Ok(S::ReadTraffic(_)) => "ReadTraffic (application data to take)".into(),
        Ok(S::ReadEarlyData(_)) => "ReadEarlyData".into(),
        Ok(S::EncodeTlsData(_)) => "EncodeTlsData (a record to send)".into(),
        Ok(S::TransmitTlsData(_)) => "TransmitTlsData (send what was encoded)".into(),
        Ok(S::BlockedHandshake) => "BlockedHandshake (waiting for the peer)".into(),
        Ok(S::WriteTraffic(_)) => "WriteTraffic (may encrypt)".into(),
        Ok(S::PeerClosed) => "PeerClosed (close_notify received)".into(),
        Ok(S::Closed) => "Closed".into(),
        Ok(_) => "another state".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// The TLS records in `bytes`, as `--trace` shows them: the record type, and for a
/// handshake record still in the clear, the messages in it.
pub(super) fn describe_records(verb: &str, mut bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let mut parts = Vec::new();
    while let [kind, _, _, hi, lo, rest @ ..] = bytes {
        let len = usize::from(*hi) << 8 | usize::from(*lo);
        let body = rest.get(..len).unwrap_or(rest);
        parts.push(match kind {
            20 => "ChangeCipherSpec".to_owned(),
            21 => "alert".to_owned(),
            22 => format!("handshake {}", handshake_types(body)),
            23 => format!("encrypted record ({len} bytes)"),
            other => format!("record type {other}"),
        });
        bytes = rest.get(len..).unwrap_or_default();
    }
    if parts.is_empty() {
        return format!("{verb} {} bytes", bytes.len());
    }
    format!("{verb} [{}]", parts.join(", "))
}

fn handshake_types(mut body: &[u8]) -> String {
    let mut names = Vec::new();
    while let [kind, a, b, c, rest @ ..] = body {
        let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
        names.push(match kind {
            1 => "ClientHello",
            2 => "ServerHello",
            4 => "NewSessionTicket",
            8 => "EncryptedExtensions",
            11 => "Certificate",
            13 => "CertificateRequest",
            15 => "CertificateVerify",
            20 => "Finished",
            24 => "KeyUpdate",
            _ => "message",
        });
        body = rest.get(len..).unwrap_or_default();
    }
    names.join("+")
}
