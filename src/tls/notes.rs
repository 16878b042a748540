//! What moat's own TLS callbacks learned during one rustls call, for the tunnel that made it.
//!
//! rustls calls the certificate resolver ([`super::sni`]) and the verifiers
//! ([`super::verifier`]) synchronously, inside `process_tls_records`, on the loop's thread.
//! Two things they learn have no way back through rustls' API: the server name a client
//! asked for (the unbuffered server connection of rustls 0.23 has no accessor for it), and
//! *why* a certificate was refused (a verifier error carries only the alert's reason, and the
//! alert that fits a refusal, `access_denied`, carries no text). So they leave notes in a
//! slot of their thread, and the tunnel collects them with [`during`] around the call.
//! Because the loop never runs two rustls calls at once on one thread, notes always belong
//! to the call that [`during`] wraps.

use std::cell::RefCell;

use super::policy::Refusal;

/// Longest server name kept (a DNS name has at most 253 characters).
const MAX_NAME: usize = 253;

/// What the callbacks noted during one call.
#[derive(Debug, Default)]
pub struct Notes {
    /// The server name (SNI) the client asked for, if it sent one.
    pub server_name: Option<Box<str>>,
    /// Why moat's verifier refused the peer's certificate, if it did.
    pub refusal: Option<Refusal>,
}

thread_local! {
    static NOTES: RefCell<Notes> = RefCell::new(Notes::default());
}

/// Runs `call` and returns what moat's TLS callbacks noted during it.
pub fn during<T>(call: impl FnOnce() -> T) -> (T, Notes) {
    // Anything left from a call made without `during` is not this call's.
    NOTES.with_borrow_mut(|notes| *notes = Notes::default());
    let result = call();
    (result, NOTES.with_borrow_mut(std::mem::take))
}

/// Notes the server name a client asked for. rustls has checked that it is a DNS name, so
/// it holds no control characters; the length is capped all the same.
pub(super) fn server_name(name: &str) {
    let cut = name
        .char_indices()
        .nth(MAX_NAME)
        .map_or(name.len(), |(at, _)| at);
    let name = name.get(..cut).unwrap_or(name);
    NOTES.with_borrow_mut(|notes| notes.server_name = Some(name.into()));
}

/// Notes why a certificate was refused.
pub(super) fn refused(refusal: Refusal) {
    NOTES.with_borrow_mut(|notes| notes.refusal = Some(refusal));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_belong_to_the_call_they_were_made_in() {
        server_name("stale.example");
        let ((), notes) = during(|| server_name("a.example"));
        assert_eq!(notes.server_name.as_deref(), Some("a.example"));
        let ((), notes) = during(|| {});
        assert!(notes.server_name.is_none() && notes.refusal.is_none());
    }
}
