//! The status endpoint: a small HTTP/1.x responder that the poll loop drives over a
//! nonblocking stream, like any other connection.
//!
//! ```text
//!  read the request head ─▶ answer it ─▶ write the answer ─▶ shut the write side ─▶ read to EOF
//!  (at most 4 KiB)          (rendered     (as the socket      (the client sees       (so closing
//!                            once)         takes it)           the end)               cannot reset)
//! ```
//!
//! `GET /metrics` answers with the Prometheus exposition ([`crate::metrics::render`]),
//! `GET /healthz` with `200 ok` while serving and `503 draining` once shutdown has begun;
//! any other path is 404, a method other than GET or HEAD 405, a request that does not
//! parse 400, a head larger than [`MAX_REQUEST_BYTES`] 431. Every answer closes the
//! connection: one request per connection is all a scraper needs.
//!
//! [`StatusConn::drive`] goes as far as the stream allows and returns; it is called again on
//! the next readiness event. The loop bounds what a slow or silent client can hold: each
//! connection lives at most [`STATUS_DEADLINE`], and at most [`MAX_STATUS_CONNS`] are open
//! at once.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{self, LoopMetrics, ProcessMetrics};

/// How long the loop lets one status connection live, from accept to close: a scrape on a
/// local network takes milliseconds; a client still not done after this is stalled or
/// hostile.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// Status connections open at once; the loop stops accepting on the status listener at
/// this many, so scrapers can never crowd out tunnels.
pub const MAX_STATUS_CONNS: usize = 16;

/// The largest request head read; a longer one is answered with 431.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;

/// The largest metrics body served; above it `/metrics` answers 500 rather than a cut
/// exposition. The body grows with the number of services, by 73 series (about 5 KiB) each,
/// so this holds some two hundred services. It is rendered whole before it is measured.
pub const MAX_METRICS_BYTES: usize = 1024 * 1024;

/// Header lines parsed; more is answered with 431.
const MAX_HEADERS: usize = 32;

/// Bytes read and thrown away after the answer before giving up on a clean close.
const LINGER_BYTES: usize = 64 * 1024;

/// Whether moat is serving or draining, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Accepting and serving tunnels.
    Serving,
    /// Shutdown has begun: no longer accepting; open tunnels are finishing.
    Draining,
}

/// What the status endpoint reports.
pub trait StatusSource {
    /// Serving or draining.
    fn health(&self) -> Health;

    /// Appends the metrics exposition to `out`.
    fn render_metrics(&self, out: &mut String);
}

/// The live state of a moat process, as the loop lends it to a status connection.
#[derive(Debug, Clone, Copy)]
pub struct MetricsView<'a> {
    /// The process-wide metrics.
    pub process: &'a ProcessMetrics,
    /// Every loop's metrics (one per worker), summed when rendered.
    pub loops: &'a [Arc<LoopMetrics>],
    /// Whether shutdown has begun.
    pub health: Health,
}

impl StatusSource for MetricsView<'_> {
    fn health(&self) -> Health {
        self.health
    }

    fn render_metrics(&self, out: &mut String) {
        metrics::render(self.process, self.loops, out);
    }
}

/// A stream whose write side can be shut while its read side stays open.
pub trait ShutdownWrite {
    /// Sends the end of the stream (a TCP FIN); reading goes on.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl ShutdownWrite for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl ShutdownWrite for mio::net::UnixStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl ShutdownWrite for crate::endpoint::Conn {
    fn shutdown_write(&mut self) -> io::Result<()> {
        crate::endpoint::Stream::shutdown_write(self)
    }
}

/// What [`StatusConn::drive`] left the connection wanting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// The stream would block: drive again on its next readiness event.
    Pending,
    /// Finished: close the connection.
    Done,
}

/// Where a status connection is.
#[derive(Debug)]
enum State {
    /// Gathering the request head: `len` bytes of it so far.
    Reading { len: usize },
    /// Sending the answer: `sent` bytes of it are out.
    Writing { answer: Vec<u8>, sent: usize },
    /// Answer sent and write side shut: reading what the client may still send until it
    /// closes, so that closing does not answer its unread bytes with a reset that could
    /// destroy the answer before it is read.
    Lingering { discarded: usize },
    /// Nothing more to do.
    Done,
}

/// One status connection: a request in, an answer out, then close.
#[derive(Debug)]
pub struct StatusConn<S> {
    stream: S,
    /// The request head as it arrives; later, scratch space for lingering reads.
    buffer: Box<[u8]>,
    state: State,
}

impl<S: Read + Write + ShutdownWrite> StatusConn<S> {
    /// A connection just accepted on the status listener.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buffer: vec![0; MAX_REQUEST_BYTES].into_boxed_slice(),
            state: State::Reading { len: 0 },
        }
    }

    /// The stream, for registering it with the poll.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Reads, answers and writes as far as the stream allows. An error means the client
    /// went away or broke the stream: close it as for [`Drive::Done`].
    pub fn drive(&mut self, source: &dyn StatusSource) -> io::Result<Drive> {
        loop {
            let next = match &mut self.state {
                State::Reading { len } => read_request(&mut self.stream, &mut self.buffer, len)?
                    .map(|head| match head {
                        Head::Gone => State::Done,
                        head => State::Writing {
                            answer: answer(&head, source),
                            sent: 0,
                        },
                    }),
                State::Writing { answer, sent } => write_answer(&mut self.stream, answer, sent)?
                    .then_some(State::Lingering { discarded: 0 }),
                State::Lingering { discarded } => {
                    linger(&mut self.stream, &mut self.buffer, discarded).then_some(State::Done)
                }
                State::Done => return Ok(Drive::Done),
            };
            match next {
                Some(state) => self.state = state,
                None => return Ok(Drive::Pending),
            }
        }
    }
}

/// What the request head came to.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A request for `path` (query string removed) with `method`.
    Request { method: Method, path: String },
    /// Closed before a whole head arrived, or not HTTP: 400.
    Malformed,
    /// Longer than [`MAX_REQUEST_BYTES`] or [`MAX_HEADERS`]: 431.
    TooLarge,
    /// Closed before sending anything: nothing to answer.
    Gone,
}

#[derive(Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// Reads until the request head is complete (`Some`) or the stream would block (`None`).
fn read_request(
    stream: &mut impl Read,
    buffer: &mut [u8],
    len: &mut usize,
) -> io::Result<Option<Head>> {
    loop {
        let Some(space) = buffer.get_mut(*len..).filter(|s| !s.is_empty()) else {
            return Ok(Some(Head::TooLarge));
        };
        match stream.read(space) {
            Ok(0) if *len == 0 => return Ok(Some(Head::Gone)),
            Ok(0) => return Ok(Some(Head::Malformed)),
            Ok(n) => *len += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Some(head) = parse_head(buffer.get(..*len).unwrap_or_default()) {
            return Ok(Some(head));
        }
    }
}

/// The request head in `bytes`, or `None` while it is incomplete.
fn parse_head(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(path)) = (request.method, request.path) else {
                return Some(Head::Malformed);
            };
            let method = match method {
                "GET" => Method::Get,
                "HEAD" => Method::Head,
                _ => Method::Other,
            };
            let path = path.split('?').next().unwrap_or_default().to_owned();
            Some(Head::Request { method, path })
        }
        Err(httparse::Error::TooManyHeaders) => Some(Head::TooLarge),
        Err(_) => Some(Head::Malformed),
    }
}

/// The whole answer to `head`, status line to body, rendered once.
fn answer(head: &Head, source: &dyn StatusSource) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (method, path) = match head {
        Head::Request { method, path } => (method, path.as_str()),
        Head::Malformed | Head::Gone => {
            return encode("400 Bad Request", TEXT, "", b"bad request\n", true)
        }
        Head::TooLarge => {
            let status = "431 Request Header Fields Too Large";
            return encode(status, TEXT, "", b"request head too large\n", true);
        }
    };
    let with_body = *method != Method::Head;
    let (status, content_type, body) = match path {
        "/metrics" | "/healthz" if *method == Method::Other => {
            let allow = "Allow: GET, HEAD\r\n";
            return encode(
                "405 Method Not Allowed",
                TEXT,
                allow,
                b"method not allowed\n",
                true,
            );
        }
        "/metrics" => {
            let mut body = String::new();
            source.render_metrics(&mut body);
            if body.len() > MAX_METRICS_BYTES {
                let why = "metrics body larger than the status endpoint serves\n";
                ("500 Internal Server Error", TEXT, why.to_owned())
            } else {
                ("200 OK", metrics::CONTENT_TYPE, body)
            }
        }
        "/healthz" => match source.health() {
            Health::Serving => ("200 OK", TEXT, "ok\n".to_owned()),
            Health::Draining => ("503 Service Unavailable", TEXT, "draining\n".to_owned()),
        },
        _ => return encode("404 Not Found", TEXT, "", b"not found\n", with_body),
    };
    encode(status, content_type, "", body.as_bytes(), with_body)
}

/// Status line, headers (`extra` already `\r\n`-terminated) and, unless answering HEAD,
/// the body; the connection closes after it.
fn encode(status: &str, content_type: &str, extra: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        body.len()
    );
    let body = if with_body { body } else { &[] };
    let mut answer = Vec::with_capacity(head.len() + body.len());
    answer.extend_from_slice(head.as_bytes());
    answer.extend_from_slice(body);
    answer
}

/// Writes the rest of `answer`; once it is all out, shuts the write side and returns true.
fn write_answer(
    stream: &mut (impl Write + ShutdownWrite),
    answer: &[u8],
    sent: &mut usize,
) -> io::Result<bool> {
    loop {
        let rest = answer.get(*sent..).unwrap_or_default();
        if rest.is_empty() {
            stream.flush()?;
            stream.shutdown_write()?;
            return Ok(true);
        }
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads and discards until the client closes (true) or the stream would block (false).
/// A client that keeps sending past [`LINGER_BYTES`], or a failed read, ends it too: the
/// answer is out, and only a clean close was at stake.
fn linger(stream: &mut impl Read, scratch: &mut [u8], discarded: &mut usize) -> bool {
    loop {
        match stream.read(scratch) {
            Ok(0) => return true,
            Ok(n) => {
                *discarded += n;
                if *discarded > LINGER_BYTES {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests;
