//! The config file: [`file::parse`] on arbitrary text, as `moat --config FILE` reads it
//! before anything is opened or bound (the process's settings, then every `[[server]]` and
//! `[[client]]` table through the same builders as the flags).
//!
//! Input: the file's text (invalid UTF-8 is replaced; `read_to_string` would refuse it
//! before TOML is parsed). Checked: no panic; every error displays as one line and names
//! the file; a file that parses gives the same `Config` when parsed again, and each
//! service's listen address displays as text that parses back to the same address.

use std::path::Path;

use super::is_one_line;
use crate::address::Address;
use crate::config::file;
use crate::config::settings::Source;
use crate::error::StartError;

/// The name errors give the file.
const PATH: &str = "/fuzz/moat.toml";

/// Runs one input; panics if an invariant breaks.
pub fn run(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let path = Path::new(PATH);
    match file::parse(path, &text, &NoFlags, 20_000) {
        Ok(config) => {
            let again = file::parse(path, &text, &NoFlags, 20_000);
            assert_eq!(
                again.map(|c| format!("{c:?}")).ok(),
                Some(format!("{config:?}")),
                "the same text parsed twice gave two configs"
            );
            for service in &config.services {
                let shown = service.listen.to_string();
                match Address::parse("--listen", &shown, true) {
                    Ok(back) => assert_eq!(back, service.listen, "listen shown as {shown:?}"),
                    Err(e) => panic!("listen {:?} shown as {shown:?}: {e}", service.listen),
                }
            }
        }
        Err(e) => assert_names_the_file(&e),
    }
}

fn assert_names_the_file(e: &StartError) {
    let shown = e.to_string();
    assert!(is_one_line(&shown), "error is not one line: {shown:?}");
    assert!(
        shown.contains(PATH),
        "error does not name the file: {shown:?}"
    );
}

/// A command line that says nothing, so everything comes from the file.
struct NoFlags;

impl Source for NoFlags {
    fn one(&self, _: &'static str) -> Result<Option<String>, StartError> {
        Ok(None)
    }

    fn all(&self, _: &'static str) -> Result<Vec<String>, StartError> {
        Ok(Vec::new())
    }

    fn switch(&self, _: &'static str) -> Result<bool, StartError> {
        Ok(false)
    }

    fn has(&self, _: &'static str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_service_file_parses_and_a_typo_names_the_file() {
        let good = "log-level = \"info\"\n\
                    [[server]]\nname = \"redis\"\nlisten = \"127.0.0.1:6380\"\n\
                    target = \"127.0.0.1:6379\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
                    client-ca = \"ca.pem\"\n\
                    [[client]]\nlisten = \"127.0.0.1:5432\"\ntarget = \"db.example:5433\"\n";
        run(good.as_bytes());
        let config = file::parse(Path::new(PATH), good, &NoFlags, 20_000);
        assert_eq!(config.map(|c| c.services.len()).ok(), Some(2));
        let typo = file::parse(Path::new(PATH), "[[server]]\ncertt = \"x\"\n", &NoFlags, 0);
        assert!(typo.is_err_and(|e| e.to_string().contains(PATH)));
        run(b"[[server]]\ncertt = \"\x1b[2J\"\n");
    }
}
