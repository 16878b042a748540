//! The two shapes of a log line, for `--log-format text|json`: the text line people read
//! and the JSON object, one per line, that log pipelines parse.
//!
//! A tunnel's closing line carries the same facts in both ([`TunnelRecord`]):
//!
//! ```text
//! tunnel closed: server peer=203.0.113.7:51234 subject="O=acme,CN=billing" to_target=1843B to_client=91022B duration=12.417s end=clean
//! {"ts":"2026-11-26T22:05:30.324Z","level":"INFO","msg":"tunnel closed","tunnel":7,"service":"server","peer":"203.0.113.7:51234","subject":"O=acme,CN=billing","to_target":1843,"to_client":91022,"duration_ms":12417,"end":"clean"}
//! ```
//!
//! Some values come from the peer (the certificate subject, SNI, ALPN), so neither shape
//! writes them raw: JSON strings are escaped as RFC 8259 asks, text values that are not
//! plain tokens are quoted and escaped the same way, and bytes that are not UTF-8 become
//! U+FFFD. No line can be split or forged by what a peer sends. Nothing here allocates:
//! everything is appended to the caller's buffer.

use std::fmt::{self, Display, Write};
use std::time::Duration;

/// The message of a tunnel's closing line.
pub const TUNNEL_CLOSED: &str = "tunnel closed";

/// What a tunnel's closing line says.
#[derive(Clone, Copy)]
pub struct TunnelRecord<'a> {
    /// The tunnel's id, unique for the life of the process.
    pub tunnel: u64,
    /// The service it belongs to.
    pub service: &'a str,
    /// Who connected: an address, or `unix`.
    pub peer: Option<&'a dyn Display>,
    /// The client certificate's subject (server mode).
    pub subject: Option<&'a str>,
    /// The server name the client asked for.
    pub sni: Option<&'a str>,
    /// The ALPN protocol agreed (bytes, as on the wire).
    pub alpn: Option<&'a [u8]>,
    /// The TLS version: `1.3`, `1.2`.
    pub tls_version: Option<&'a str>,
    /// The cipher suite, by rustls' name (`TLS13_AES_128_GCM_SHA256`).
    pub suite: Option<&'a str>,
    /// The key-exchange group, by rustls' name (`X25519MLKEM768`).
    pub group: Option<&'a str>,
    /// Whether the TLS session was resumed.
    pub resumed: Option<bool>,
    /// Plaintext bytes from the client to the target.
    pub to_target: u64,
    /// Plaintext bytes from the target to the client.
    pub to_client: u64,
    /// How long the tunnel lived.
    pub duration: Duration,
    /// How it ended (`clean`, `idle timeout`, the error).
    pub end: &'a dyn Display,
}

impl fmt::Debug for TunnelRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::new();
        write_text(self, &mut line);
        f.debug_tuple("TunnelRecord").field(&line).finish()
    }
}

/// Appends the text message of a tunnel's closing line (what follows the timestamp and
/// level): `tunnel closed: SERVICE peer=... [subject="..."] [sni=...] [tls_version=...
/// suite=... group=... resumed=yes|no alpn=...] to_target=NB to_client=NB
/// duration=S.sssS end=...`. The TLS facts come together, `-` for what does not apply
/// (no ALPN, no group after a TLS 1.2 resumption), once a handshake finished.
pub fn write_text(record: &TunnelRecord<'_>, out: &mut String) {
    out.push_str(TUNNEL_CLOSED);
    out.push_str(": ");
    text_bare(out, record.service);
    if let Some(peer) = record.peer {
        let _ = write!(out, " peer={peer}");
    }
    if let Some(subject) = record.subject {
        // Always quoted, as before: a subject has spaces and commas.
        out.push_str(" subject=");
        quoted(out, subject.as_bytes());
    }
    if let Some(sni) = record.sni {
        out.push_str(" sni=");
        text_value(out, sni.as_bytes());
    }
    if let Some(version) = record.tls_version {
        let dash = b"-".as_slice();
        let tokens = [
            ("tls_version", version.as_bytes()),
            ("suite", record.suite.map_or(dash, str::as_bytes)),
            ("group", record.group.map_or(dash, str::as_bytes)),
            (
                "resumed",
                if record.resumed == Some(true) {
                    b"yes".as_slice()
                } else {
                    b"no".as_slice()
                },
            ),
            ("alpn", record.alpn.unwrap_or(dash)),
        ];
        for (key, value) in tokens {
            let _ = write!(out, " {key}=");
            text_value(out, value);
        }
    }
    let seconds = record.duration.as_secs_f64();
    let _ = write!(
        out,
        " to_target={}B to_client={}B duration={seconds:.3}s end=",
        record.to_target, record.to_client
    );
    // The end reason is free text at the end of the line: only control characters could
    // hurt it there.
    let _ = write!(TextSafe(out), "{}", record.end);
}

/// Appends a tunnel's closing line as one JSON object and a line feed.
pub fn write_json(ts: &str, level: log::Level, record: &TunnelRecord<'_>, out: &mut String) {
    json_head(out, ts, level, &TUNNEL_CLOSED);
    let _ = write!(out, ",\"tunnel\":{}", record.tunnel);
    json_member(out, "service", record.service);
    if let Some(peer) = record.peer {
        json_member(out, "peer", peer);
    }
    let strings = [
        ("subject", record.subject.map(str::as_bytes)),
        ("sni", record.sni.map(str::as_bytes)),
        ("alpn", record.alpn),
        ("tls_version", record.tls_version.map(str::as_bytes)),
        ("suite", record.suite.map(str::as_bytes)),
        ("group", record.group.map(str::as_bytes)),
    ];
    for (key, value) in strings {
        if let Some(value) = value {
            let _ = write!(out, ",\"{key}\":");
            json_bytes(out, value);
        }
    }
    if let Some(resumed) = record.resumed {
        let _ = write!(out, ",\"resumed\":{resumed}");
    }
    let _ = write!(
        out,
        ",\"to_target\":{},\"to_client\":{},\"duration_ms\":{}",
        record.to_target,
        record.to_client,
        record.duration.as_millis()
    );
    json_member(out, "end", record.end);
    out.push_str("}\n");
}

/// Appends any other log line as one JSON object (`ts`, `level`, `msg`) and a line feed.
pub fn write_json_line(ts: &str, level: log::Level, msg: &dyn Display, out: &mut String) {
    write_json_line_with(ts, level, msg, &[], out);
}

/// A structured value of a log line beside its message (`log`'s key-values), such as the
/// `tunnel` id every debug line about a tunnel carries.
#[derive(Clone, Copy)]
pub enum Field<'a> {
    /// A number, written as a JSON number.
    Number(u64),
    /// Anything else, written as a JSON string.
    Text(&'a dyn Display),
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "Number({n})"),
            Self::Text(text) => write!(f, "Text({text})"),
        }
    }
}

/// [`write_json_line`] with extra members after `msg`.
pub fn write_json_line_with(
    ts: &str,
    level: log::Level,
    msg: &dyn Display,
    fields: &[(&str, Field<'_>)],
    out: &mut String,
) {
    json_head(out, ts, level, msg);
    for (key, value) in fields {
        let _ = write!(out, ",");
        json_bytes(out, key.as_bytes());
        match value {
            Field::Number(n) => {
                let _ = write!(out, ":{n}");
            }
            Field::Text(text) => {
                out.push_str(":\"");
                let _ = write!(JsonEscaped(out), "{text}");
                out.push('"');
            }
        }
    }
    out.push_str("}\n");
}

/// `{"ts":...,"level":...,"msg":...` without the closing brace.
fn json_head(out: &mut String, ts: &str, level: log::Level, msg: &dyn Display) {
    out.push('{');
    out.push_str("\"ts\":");
    json_bytes(out, ts.as_bytes());
    let _ = write!(out, ",\"level\":\"{}\"", level.as_str());
    json_member(out, "msg", msg);
}

/// `,"key":"value"` with `value` written through the escaper.
fn json_member(out: &mut String, key: &str, value: impl Display) {
    let _ = write!(out, ",\"{key}\":\"");
    let _ = write!(JsonEscaped(out), "{value}");
    out.push('"');
}

/// A JSON string of `bytes`, invalid UTF-8 replaced by U+FFFD.
fn json_bytes(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        escape_json(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    out.push('"');
}

/// Escapes for the inside of a JSON string: quote, backslash and every control character.
fn escape_json(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A text value written bare when it is a plain token, else quoted.
fn text_value(out: &mut String, bytes: &[u8]) {
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='));
    match std::str::from_utf8(bytes) {
        Ok(token) if plain => out.push_str(token),
        _ => quoted(out, bytes),
    }
}

/// A service name is the operator's and may hold spaces (`demo tls leg`), so it stays
/// bare unless it holds a control character.
fn text_bare(out: &mut String, s: &str) {
    if s.chars().any(|c| c.is_control()) {
        quoted(out, s.as_bytes());
    } else {
        out.push_str(s);
    }
}

/// A double-quoted text value with JSON's escapes, so a reader can undo them.
fn quoted(out: &mut String, bytes: &[u8]) {
    json_bytes(out, bytes);
}

/// A `fmt::Write` that escapes everything through it for the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut String);

impl Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_json(self.0, s);
        Ok(())
    }
}

/// A `fmt::Write` that passes text through but escapes control characters, so a line
/// stays one line.
struct TextSafe<'a>(&'a mut String);

impl Write for TextSafe<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() {
                let _ = write!(self.0, "{}", c.escape_default());
            } else {
                self.0.push(c);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(end: &'a dyn Display) -> TunnelRecord<'a> {
        TunnelRecord {
            tunnel: 7,
            service: "server",
            peer: Some(&"203.0.113.7:51234"),
            subject: Some("O=acme,CN=billing"),
            sni: None,
            alpn: None,
            tls_version: None,
            suite: None,
            group: None,
            resumed: None,
            to_target: 1843,
            to_client: 91022,
            duration: Duration::from_millis(12_417),
            end,
        }
    }

    fn parse(line: &str) -> serde_json::Map<String, serde_json::Value> {
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("not a JSON object: {other:?} from {line:?}"),
        }
    }

    #[test]
    fn the_text_line_is_todays_line() {
        let mut line = String::new();
        write_text(&record(&"clean"), &mut line);
        assert_eq!(
            line,
            "tunnel closed: server peer=203.0.113.7:51234 subject=\"O=acme,CN=billing\" \
             to_target=1843B to_client=91022B duration=12.417s end=clean"
        );
    }

    #[test]
    fn the_text_line_adds_tls_facts_when_known() {
        let mut line = String::new();
        let tls = TunnelRecord {
            sni: Some("db.example"),
            alpn: Some(b"h2"),
            tls_version: Some("1.3"),
            suite: Some("TLS13_AES_128_GCM_SHA256"),
            group: Some("X25519MLKEM768"),
            resumed: Some(true),
            ..record(&"clean")
        };
        write_text(&tls, &mut line);
        assert!(
            line.contains(
                " subject=\"O=acme,CN=billing\" sni=db.example tls_version=1.3 \
                 suite=TLS13_AES_128_GCM_SHA256 group=X25519MLKEM768 resumed=yes alpn=h2 \
                 to_target=1843B"
            ),
            "{line}"
        );
    }

    #[test]
    fn peer_text_cannot_break_a_text_line() {
        let mut line = String::new();
        let hostile = TunnelRecord {
            subject: Some("CN=evil\" end=clean\nINFO  forged"),
            tls_version: Some("1.3"),
            alpn: Some(b"a b\xff"),
            ..record(&"tls error\nforged line")
        };
        write_text(&hostile, &mut line);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains(r#"subject="CN=evil\" end=clean\nINFO  forged""#),
            "{line}"
        );
        assert!(line.contains("alpn=\"a b\u{fffd}\""), "{line}");
        assert!(line.ends_with(r"end=tls error\nforged line"), "{line}");
    }

    #[test]
    fn the_json_line_has_every_field_and_omits_unknown_ones() {
        let mut line = String::new();
        write_json(
            "2026-11-26T22:05:30.324Z",
            log::Level::Info,
            &record(&"clean"),
            &mut line,
        );
        let map = parse(&line);
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = [
            "ts",
            "level",
            "msg",
            "tunnel",
            "service",
            "peer",
            "subject",
            "to_target",
            "to_client",
            "duration_ms",
            "end",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        // The fixed fields lead the line, in this order, for a person reading raw lines.
        assert!(line.starts_with(r#"{"ts":"2026-11-26T22:05:30.324Z","level":"INFO","msg":"tunnel closed","tunnel":7,"service":"server","#), "{line}");
        assert_eq!(map["ts"], "2026-11-26T22:05:30.324Z");
        assert_eq!(map["level"], "INFO");
        assert_eq!(map["msg"], "tunnel closed");
        assert_eq!(map["tunnel"], 7);
        assert_eq!(map["peer"], "203.0.113.7:51234");
        assert_eq!(map["to_client"], 91022);
        assert_eq!(map["duration_ms"], 12417);
        assert_eq!(map["end"], "clean");

        let mut full = String::new();
        let tls = TunnelRecord {
            sni: Some("db.example"),
            alpn: Some(b"redis"),
            tls_version: Some("1.3"),
            group: Some("X25519MLKEM768"),
            resumed: Some(false),
            ..record(&"idle timeout")
        };
        write_json("t", log::Level::Warn, &tls, &mut full);
        let map = parse(&full);
        assert_eq!(map["sni"], "db.example");
        assert_eq!(map["alpn"], "redis");
        assert_eq!(map["tls_version"], "1.3");
        assert_eq!(map["group"], "X25519MLKEM768");
        assert_eq!(map["resumed"], false);
        assert_eq!(map["level"], "WARN");
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_controls_and_bad_utf8() {
        let subject = "CN=\"q\" \\ back\nline\ttab\u{1}\u{7f} ü 🦀";
        let end = format!("{subject} end");
        let mut line = String::new();
        let hostile = TunnelRecord {
            subject: Some(subject),
            alpn: Some(b"h\xff\xfe2"),
            ..record(&end)
        };
        write_json("t", log::Level::Info, &hostile, &mut line);
        let map = parse(&line);
        assert_eq!(map["subject"], subject);
        assert_eq!(map["end"], end.as_str());
        assert_eq!(map["alpn"], "h\u{fffd}\u{fffd}2");
    }

    #[test]
    fn any_line_can_be_a_json_object() {
        let mut line = String::new();
        let wait = Duration::from_secs(30);
        write_json_line(
            "t",
            log::Level::Info,
            &format_args!("SIGTERM: waiting up to {wait:?} for {} \"tunnels\"", 2),
            &mut line,
        );
        let map = parse(&line);
        assert_eq!(map.len(), 3);
        assert_eq!(map["msg"], "SIGTERM: waiting up to 30s for 2 \"tunnels\"");
    }
}
