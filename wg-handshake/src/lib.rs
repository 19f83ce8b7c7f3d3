//! The handshake role: everything about WireGuard handshakes except the
//! secrets.
//!
//! This crate runs inside the unprivileged handshake process. It parses
//! every handshake packet, checks MAC1 first (which needs only public
//! keys), demands MAC2 and sends cookie replies under load, allocates
//! session indices, rejects replayed initiation timestamps, runs each
//! peer's timers, and tells the transport role which keypairs to install.
//! The Noise computations themselves are questions to the crypto role; note
//! that this crate does not depend on `wg-crypto` (only its tests do), so
//! nothing here can reach the static key.
//!
//! By concern:
//! - [`core`]: the sans-IO state machine, `(now, event) -> actions`.
//! - [`timers`]: the whitepaper's per-peer timers, as deadlines.
//! - [`mac`]: MAC1/MAC2 and the keys they are made with.
//! - [`cookie`]: cookie secret, cookie replies, cookies from peers.
//! - [`load`]: when we are under load, and per-source rate limiting.
//! - [`index`]: random session indices.
//! - [`process`]: the handshake process's main loop over its channels.

#![forbid(unsafe_code)]

pub mod cookie;
pub mod core;
pub mod index;
pub mod load;
pub mod mac;
pub mod process;
pub mod timers;

pub use crate::core::{
    AwaitingCrypto, Begun, Config, Core, Counters, Crypto, DropReason, PacketOutcome,
};
pub use crate::timers::TimerConfig;
