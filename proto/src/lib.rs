//! Shared vocabulary of wgd's processes.
//!
//! - [`wire`]: the four WireGuard messages as they appear on UDP.
//! - [`keys`]: key and session-material types that cross process
//!   boundaries, with the secret ones zeroized and redacted.
//! - [`ipc`]: one message enum per channel direction between the processes.
//! - [`codec`]: the single encode/decode pair for IPC messages (postcard,
//!   size-limited).
//! - [`batch`]: bounded batches, so that a configuration or a status of
//!   any size travels in messages under the limit.
//! - [`channel`]: channels typed by direction (`Channel<Out, In>`), one
//!   message per `SOCK_SEQPACKET` datagram, file descriptors passed by
//!   `SCM_RIGHTS`, replies matched to their requests by id.

#[cfg(feature = "alloc-count")]
pub mod alloc_count;
pub mod batch;
pub mod channel;
pub mod codec;
pub mod ipc;
pub mod keys;
pub mod wire;
