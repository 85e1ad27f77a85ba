//! The message API: what clients, the CLI and node agents say to the server
//! over TCP, and how it is framed and signed. It depends on `domain` and
//! `types` only: everything that travels on the wire is defined here or in
//! `domain`.
//!
//! A connection carries length-prefixed frames (a 4-byte big-endian length,
//! then that many bytes of one encoded message). The client opens with
//! [`ClientFrame::Hello`]; the server answers [`ServerFrame::Welcome`] or a
//! [`ServerFrame::Goodbye`] naming the problem. After that the client sends
//! [`Call`]s, each with its own id and signature, and the server answers
//! each with a [`ServerFrame::Reply`] echoing the id, in any order: many
//! calls may be in flight on one connection.
//!
//! - `frame`: length-prefixed frames with a hard size limit.
//! - `call`: the hello, calls, replies, credentials.
//! - `request`, `response`, `error`: the messages.
//! - `agent`: attempts, completions and file operations between server and
//!   agent; the node's credential file.
//! - `auth`: HMAC-SHA256 signing, derived secrets, the nonce cache.
//! - `explain`, `autoscale`, `blobs`: views the server computes and clients
//!   show (wait reasons in words, formula evaluations, blob metadata).

pub mod agent;
pub mod auth;
pub mod autoscale;
pub mod blobs;
mod call;
mod error;
pub mod explain;
pub mod frame;
mod request;
mod response;
pub mod shared_key;
pub mod tls;

pub use agent::*;
pub use call::*;
pub use error::*;
pub use frame::{read_frame, write_frame, FrameError, FRAME_BYTES_MAX, READ_BUFFER_BYTES};
pub use request::*;
pub use response::*;

/// `%XX` decoded (a malformed escape stays as written); with
/// `plus_is_space`, `+` is a space, as in query strings and forms (not in
/// paths).
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'+', _, _) if plus_is_space => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
