//! What each of rustls' connection states leads to: the one place where the unbuffered
//! API's states meet moat's buffers.

use std::io;

use rustls::unbuffered::{ConnectionState, EncryptError};

use crate::buffer::{BufferPool, Held};
use crate::endpoint::EndpointError;

/// What a [`TlsEnd::process`](super::TlsEnd::process) pass does once rustls allows application data.
#[derive(Debug, Clone, Copy)]
pub(super) enum Intent<'a> {
    /// Nothing: just take in what was received and write out what rustls has to say.
    Settle,
    /// Encrypt these bytes (at most [`TlsEnd::room`](super::TlsEnd::room)).
    Encrypt(&'a [u8]),
    /// Encrypt a `close_notify` alert.
    CloseNotify,
}

/// What one state of rustls' machine led to.
pub(super) enum Step {
    /// Handled; ask rustls for its next state.
    Next,
    /// rustls waits for more records from the peer, or for us to write.
    Rest,
    /// The intent was carried out; the number is the plaintext encrypted.
    Done(usize),
}

/// What handling one of rustls' states may touch: everything but the received records,
/// which rustls is holding while the state lives.
pub(super) struct Output<'a> {
    pub(super) plaintext: &'a mut Held,
    pub(super) outgoing: &'a mut Held,
    pub(super) peer_closed: &'a mut bool,
    /// Set when a decrypted record waits for room in `plaintext`.
    pub(super) plaintext_blocked: &'a mut bool,
    pub(super) pool: &'a mut BufferPool,
}

impl Output<'_> {
    /// Lets `write` put records into the free space of `outgoing`.
    fn write_with<E>(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let result = write(self.outgoing.spare_mut(self.pool));
        self.outgoing
            .fill(result.as_ref().map_or(0, |n| *n), self.pool);
        result
    }

    pub(super) fn handle<Data>(
        &mut self,
        state: Result<ConnectionState<'_, '_, Data>, rustls::Error>,
        intent: Intent<'_>,
    ) -> Result<Step, EndpointError> {
        match state.map_err(EndpointError::Tls)? {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(len) = records.peek_len() {
                    if len.get() > self.plaintext.free() {
                        // Only after a handshake whose flight came with more data than the
                        // input rule allows (see `read_in`): rustls keeps the record until
                        // the other end has taken enough plaintext.
                        *self.plaintext_blocked = true;
                        return Ok(Step::Rest);
                    }
                    match records.next_record() {
                        Some(Ok(record)) => {
                            self.plaintext.extend(record.payload, self.pool);
                        }
                        Some(Err(e)) => return Err(EndpointError::Tls(e)),
                        None => break,
                    }
                }
                Ok(Step::Next)
            }
            ConnectionState::EncodeTlsData(mut record) => {
                // `process` keeps room for any record rustls emits unasked.
                self.write_with(|spare| record.encode(spare))
                    .map_err(|e| internal(&e.to_string()))?;
                Ok(Step::Next)
            }
            // The records are in `outgoing`, ahead of anything written later.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Ok(Step::Next)
            }
            ConnectionState::PeerClosed => {
                *self.peer_closed = true;
                Ok(Step::Next)
            }
            ConnectionState::BlockedHandshake | ConnectionState::Closed => Ok(Step::Rest),
            ConnectionState::WriteTraffic(mut traffic) => {
                let written = match intent {
                    Intent::Settle => return Ok(Step::Rest),
                    Intent::Encrypt(data) => self
                        .write_with(|spare| traffic.encrypt(data, spare))
                        .map(|_| data.len()),
                    Intent::CloseNotify => self
                        .write_with(|spare| traffic.queue_close_notify(spare))
                        .map(|_| 0),
                };
                match written {
                    Ok(taken) => Ok(Step::Done(taken)),
                    // `room` promised more than there is; take nothing now.
                    Err(EncryptError::InsufficientSize(_)) => Ok(Step::Rest),
                    Err(e) => Err(internal(&e.to_string())),
                }
            }
            // 0-RTT is off, so rustls never offers early data.
            ConnectionState::ReadEarlyData(_) => Err(internal("unexpected early data")),
            _ => Err(internal("unknown TLS connection state")),
        }
    }
}

fn internal(what: &str) -> EndpointError {
    EndpointError::Io(io::Error::other(format!("TLS buffering: {what}")))
}
