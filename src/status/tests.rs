//! The status endpoint over scripted in-memory streams (every route and refusal, requests
//! and answers cut into the smallest pieces), and once over a real loopback socket.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use super::*;

/// What the next `read` on a [`Scripted`] stream returns.
#[derive(Debug)]
enum Next {
    Bytes(Vec<u8>),
    WouldBlock,
}

/// A stream that plays back reads (EOF once the script runs out) and takes writes at most
/// `write_chunk` bytes at a time, blocking between writes when `stingy`.
#[derive(Debug, Default)]
struct Scripted {
    reads: VecDeque<Next>,
    written: Vec<u8>,
    write_chunk: usize,
    stingy: bool,
    blocked: bool,
    shut: bool,
}

impl Scripted {
    fn new(request: &[u8]) -> Self {
        Self {
            reads: VecDeque::from([Next::Bytes(request.to_vec())]),
            write_chunk: usize::MAX,
            ..Self::default()
        }
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            None => Ok(0),
            Some(Next::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Some(Next::Bytes(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.reads.push_front(Next::Bytes(bytes.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(!self.shut, "write after shutdown");
        if self.stingy {
            self.blocked = !self.blocked;
            if self.blocked {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let n = buf.len().min(self.write_chunk);
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ShutdownWrite for Scripted {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut = true;
        Ok(())
    }
}

struct Fixed {
    health: Health,
    metrics: String,
}

impl StatusSource for Fixed {
    fn health(&self) -> Health {
        self.health
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&self.metrics);
    }
}

const METRICS: &str = "# HELP moat_up Up.\n# TYPE moat_up gauge\nmoat_up 1\n";

fn serving() -> Fixed {
    Fixed {
        health: Health::Serving,
        metrics: METRICS.to_owned(),
    }
}

/// Drives until done; returns the stream and how many drives said `Pending`.
fn drive_to_end(stream: Scripted, source: &dyn StatusSource) -> (Scripted, usize) {
    let mut conn = StatusConn::new(stream);
    let mut pending = 0;
    for _ in 0..100_000 {
        match conn.drive(source).expect("no stream error") {
            Drive::Pending => pending += 1,
            Drive::Done => return (conn.stream, pending),
        }
    }
    panic!("never done");
}

/// An answer split into status code, headers (lower-case names) and body.
#[derive(Debug)]
struct Answer {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = response.parse(bytes).expect("an HTTP answer") else {
        panic!("incomplete answer: {:?}", String::from_utf8_lossy(bytes));
    };
    Answer {
        code: response.code.unwrap_or_default(),
        headers: response
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect(),
        body: bytes[len..].to_vec(),
    }
}

fn ask(request: &str, source: &dyn StatusSource) -> Answer {
    let (stream, _) = drive_to_end(Scripted::new(request.as_bytes()), source);
    assert!(stream.shut, "the write side is shut after the answer");
    let answer = parse_answer(&stream.written);
    assert_eq!(answer.header("connection"), Some("close"));
    answer
}

#[test]
fn metrics_are_served_with_the_exposition_content_type() {
    let answer = ask("GET /metrics HTTP/1.1\r\nHost: moat\r\n\r\n", &serving());
    assert_eq!(answer.code, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let length = METRICS.len().to_string();
    assert_eq!(answer.header("content-length"), Some(length.as_str()));
    assert_eq!(answer.body, METRICS.as_bytes());
    // A query string (Prometheus may add one) does not change the page.
    let with_query = ask("GET /metrics?debug=1 HTTP/1.0\r\n\r\n", &serving());
    assert_eq!(
        (with_query.code, with_query.body.len()),
        (200, METRICS.len())
    );
}

#[test]
fn healthz_says_ok_while_serving_and_503_while_draining() {
    let ok = ask("GET /healthz HTTP/1.1\r\n\r\n", &serving());
    assert_eq!((ok.code, &ok.body[..]), (200, &b"ok\n"[..]));
    let draining = Fixed {
        health: Health::Draining,
        metrics: String::new(),
    };
    let answer = ask("GET /healthz HTTP/1.1\r\n\r\n", &draining);
    assert_eq!((answer.code, &answer.body[..]), (503, &b"draining\n"[..]));
}

#[test]
fn head_gets_the_headers_without_the_body() {
    let answer = ask("HEAD /metrics HTTP/1.1\r\n\r\n", &serving());
    assert_eq!(answer.code, 200);
    let length = METRICS.len().to_string();
    assert_eq!(answer.header("content-length"), Some(length.as_str()));
    assert!(answer.body.is_empty());
}

#[test]
fn other_paths_methods_and_garbage_are_refused() {
    assert_eq!(ask("GET / HTTP/1.1\r\n\r\n", &serving()).code, 404);
    assert_eq!(ask("POST /nowhere HTTP/1.1\r\n\r\n", &serving()).code, 404);
    let post = ask(
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        &serving(),
    );
    assert_eq!(post.code, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(ask("\x16\x03\x01\x02\x00\r\n\r\n", &serving()).code, 400);
    assert_eq!(ask("GET /metrics HTTP/2.0\r\n\r\n", &serving()).code, 400);
    // Closed halfway through the head: what arrived is not a request.
    assert_eq!(ask("GET /metr", &serving()).code, 400);
}

#[test]
fn a_head_too_long_or_with_too_many_headers_gets_431() {
    let long = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(5_000)
    );
    assert_eq!(ask(&long, &serving()).code, 431);
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    let request = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    assert_eq!(ask(&request, &serving()).code, 431);
    // Exactly at the limit still fits.
    let head = "GET /metrics HTTP/1.1\r\nX-Pad: \r\n\r\n";
    let fill = "a".repeat(MAX_REQUEST_BYTES - head.len());
    let full = format!("GET /metrics HTTP/1.1\r\nX-Pad: {fill}\r\n\r\n");
    assert_eq!(full.len(), MAX_REQUEST_BYTES);
    assert_eq!(ask(&full, &serving()).code, 200);
}

#[test]
fn a_client_that_sends_nothing_is_closed_without_an_answer() {
    let (stream, _) = drive_to_end(Scripted::new(b""), &serving());
    assert!(stream.written.is_empty());
}

#[test]
fn a_request_one_byte_at_a_time_is_answered_once_complete() {
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = Scripted::new(b"");
    stream.reads = request
        .iter()
        .flat_map(|b| [Next::Bytes(vec![*b]), Next::WouldBlock])
        .collect();
    // The client stays open after its request until it has read the answer.
    stream.reads.push_back(Next::WouldBlock);
    let mut conn = StatusConn::new(stream);
    let source = serving();
    for _ in 0..request.len() - 1 {
        assert_eq!(conn.drive(&source).ok(), Some(Drive::Pending));
        assert!(
            conn.stream.written.is_empty(),
            "answered before the head ended"
        );
    }
    // The last byte completes the head: the answer goes out, then the close is awaited.
    assert_eq!(conn.drive(&source).ok(), Some(Drive::Pending));
    assert_eq!(parse_answer(&conn.stream.written).code, 200);
    assert!(conn.stream.shut);
    assert_eq!(conn.drive(&source).ok(), Some(Drive::Pending));
    // The client closes: done.
    assert_eq!(conn.drive(&source).ok(), Some(Drive::Done));
    assert_eq!(conn.drive(&source).ok(), Some(Drive::Done));
}

#[test]
fn an_answer_written_a_few_bytes_at_a_time_arrives_whole() {
    let request = b"GET /metrics HTTP/1.1\r\n\r\n";
    let (whole, _) = drive_to_end(Scripted::new(request), &serving());
    let mut stream = Scripted::new(request);
    stream.write_chunk = 3;
    stream.stingy = true;
    let (pieces, pending) = drive_to_end(stream, &serving());
    assert_eq!(pieces.written, whole.written);
    assert!(
        pending >= whole.written.len() / 3,
        "{pending} drives were pending"
    );
    assert!(pieces.shut);
}

#[test]
fn bytes_after_the_request_are_read_and_dropped_before_closing() {
    let mut stream = Scripted::new(b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n");
    stream.reads.push_back(Next::Bytes(vec![b'x'; 10_000]));
    let (stream, _) = drive_to_end(stream, &serving());
    assert_eq!(parse_answer(&stream.written).body, b"ok\n");
    assert!(
        stream.reads.is_empty(),
        "everything the client sent was read"
    );
}

#[test]
fn a_metrics_body_over_the_cap_is_refused_not_cut() {
    let huge = Fixed {
        health: Health::Serving,
        metrics: "x".repeat(MAX_METRICS_BYTES + 1),
    };
    let answer = ask("GET /metrics HTTP/1.1\r\n\r\n", &huge);
    assert_eq!(answer.code, 500);
    assert!(answer.body.len() < 100);
}

#[test]
fn over_loopback_the_client_reads_the_answer_to_its_end() {
    use mio::{Events, Interest, Poll, Token};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: moat\r\n\r\n")
            .expect("send");
        let mut answer = Vec::new();
        // read_to_end returns only at EOF: the server shut its write side.
        stream.read_to_end(&mut answer).expect("read");
        answer
    });
    let (accepted, _) = listener.accept().expect("accept");
    accepted.set_nonblocking(true).expect("nonblocking");
    let mut conn = StatusConn::new(mio::net::TcpStream::from_std(accepted));
    let mut poll = Poll::new().expect("poll");
    let interest = Interest::READABLE | Interest::WRITABLE;
    poll.registry()
        .register(conn.stream_mut(), Token(0), interest)
        .expect("register");
    let mut events = Events::with_capacity(8);
    let source = serving();
    let mut done = false;
    while !done {
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .expect("poll");
        assert!(!events.is_empty(), "no event within 10 s");
        done = conn.drive(&source).expect("drive") == Drive::Done;
    }
    let answer = parse_answer(&client.join().expect("client"));
    assert_eq!((answer.code, &answer.body[..]), (200, METRICS.as_bytes()));
}
