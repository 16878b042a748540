//! The command line: [`crate::cli::parse`] on argument vectors, and the address and duration
//! parsers on single values.
//!
//! Input: one byte that picks the open-file limit, then the arguments separated by NUL
//! bytes (invalid UTF-8 is replaced, as a shell would hand over only strings). Checked: no
//! panic; every error displays as one line; an address or duration that parses displays as
//! text that parses back to the same value.

use std::time::Duration;

use super::{is_one_line, Input};
use crate::address::Address;
use crate::cli::{self, Command};
use crate::config::parse_duration;
use crate::error::StartError;

/// Runs one input; panics if an invariant breaks.
pub fn run(input: &[u8]) {
    let mut input = Input::new(input);
    let descriptor_limit = [0, 64, 1024, 20_000, u64::MAX][usize::from(input.byte() % 5)];
    let text = String::from_utf8_lossy(input.rest());
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    match cli::parse(&args, descriptor_limit) {
        Ok(Command::Run(config) | Command::Check(config)) => {
            let _ = format!("{config:?}");
        }
        Ok(Command::Help(text)) => assert!(!text.is_empty()),
        Ok(Command::Version) => {}
        Err(e) => assert_one_line(&e),
    }
    for arg in &args {
        address(arg, true);
        address(arg, false);
        duration(arg);
    }
}

fn address(text: &str, listen: bool) {
    match Address::parse("--listen", text, listen) {
        Ok(address) => {
            let shown = address.to_string();
            match Address::parse("--listen", &shown, listen) {
                Ok(again) => assert_eq!(again, address, "{text:?} shown as {shown:?}"),
                Err(e) => panic!("{text:?} parsed, but not as shown, {shown:?}: {e}"),
            }
        }
        Err(e) => assert_one_line(&e),
    }
}

fn duration(text: &str) {
    match parse_duration("--idle-timeout", text) {
        Ok(d) => {
            assert!(d > Duration::ZERO, "{text:?} gave {d:?}");
            let again = parse_duration("--idle-timeout", &format!("{}ms", d.as_millis()));
            assert_eq!(again.ok(), Some(d), "{text:?}");
        }
        Err(e) => assert_one_line(&e),
    }
}

fn assert_one_line(e: &StartError) {
    let shown = e.to_string();
    assert!(is_one_line(&shown), "error is not one line: {shown:?}");
}
