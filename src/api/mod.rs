//! The message API: what clients, the CLI and node agents say to the server
//! over TCP, and how it is framed and signed.
//!
//! A connection carries length-prefixed frames (a 4-byte big-endian length,
//! then that many bytes of one encoded message). The client opens with
//! [`ClientFrame::Hello`]; the server answers [`ServerFrame::Welcome`] or a
//! [`ServerFrame::Goodbye`] naming the problem. After that the client sends
//! [`Call`]s, each with its own id and signature, and the server answers
//! each with a [`ServerFrame::Reply`] echoing the id, in any order: many
//! calls may be in flight on one connection.

pub mod auth;
pub mod frame;
pub mod proto;

pub use frame::{read_frame, write_frame, FrameError, FRAME_BYTES_MAX, READ_BUFFER_BYTES};
pub use proto::*;
