//! Choosing the server certificate by the name the client asks for (SNI).
//!
//! Each `--cert`/`--key` pair answers for the DNS names in its certificate's subject
//! alternative names. A client's name picks the pair with that exact name, else the pair
//! with a wildcard name (`*.example.com`) covering it (one label only), else the *first*
//! pair: the default, also for a client that sends no name at all. rustls' stock resolver
//! refuses such clients instead; a tunnel in front of one service wants them served.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::identity::PeerIdentity;
use super::notes;

/// The certificates of server mode, by name.
#[derive(Debug)]
pub struct SniResolver {
    /// In command-line order; the first is the default.
    identities: Vec<Arc<CertifiedKey>>,
    names: NameIndex,
}

/// Which identity answers for which name.
#[derive(Debug, Default)]
struct NameIndex {
    /// Lowercase DNS name → index of the first identity with it.
    exact: HashMap<String, usize>,
    /// Lowercase parent of a wildcard name (`example.com` for `*.example.com`) → index.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    /// A resolver over `identities`, in order; the first is the default. `None` if there are
    /// none.
    pub fn new(identities: Vec<Arc<CertifiedKey>>) -> Option<Self> {
        if identities.is_empty() {
            return None;
        }
        let mut names = NameIndex::default();
        for (index, identity) in identities.iter().enumerate() {
            let dns_names = identity
                .end_entity_cert()
                .ok()
                .and_then(|der| PeerIdentity::from_der(der))
                .map(|id| id.dns_names)
                .unwrap_or_default();
            names.add(index, &dns_names);
        }
        Some(Self { identities, names })
    }
}

impl NameIndex {
    /// Records that identity `index` answers for `dns_names`, unless an earlier one does.
    fn add(&mut self, index: usize, dns_names: &[String]) {
        for name in dns_names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_owned()).or_insert(index),
                None => self.exact.entry(name).or_insert(index),
            };
        }
    }

    /// The index of the identity that answers for `name`: exact, then wildcard, else 0.
    fn choose(&self, name: Option<&str>) -> usize {
        let Some(name) = name else {
            return 0;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&index) = self.exact.get(&name) {
            return index;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name();
        if let Some(name) = name {
            notes::server_name(name);
        }
        self.identities.get(self.names.choose(name)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_first_then_wildcards_then_the_default() {
        let mut names = NameIndex::default();
        names.add(0, &["default.example".into()]);
        names.add(1, &["*.example.com".into(), "a.example.com".into()]);
        names.add(2, &["B.example.com".into(), "a.example.com".into()]);
        for (asked, chosen) in [
            (Some("a.example.com"), 1),
            (Some("b.example.com"), 2),
            (Some("B.EXAMPLE.com."), 2),
            (Some("c.example.com"), 1),
            (Some("x.c.example.com"), 0),
            (Some("example.com"), 0),
            (Some("unknown.test"), 0),
            (None, 0),
        ] {
            assert_eq!(names.choose(asked), chosen, "{asked:?}");
        }
    }
}
