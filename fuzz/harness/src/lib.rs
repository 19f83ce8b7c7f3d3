//! What each of wgd's fuzz targets feeds its parser and checks about the
//! result, and the seed corpus of valid messages each target starts from.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` are one line each and
//! call the function of the same name here. Keeping the logic in this
//! ordinary library means it builds on stable: `gen-corpus` (this crate's
//! binary) runs every seed through its target before writing it, so a
//! seed that does not parse, or that trips an assertion, is caught when
//! the corpus is made rather than when the fuzzer starts.
//!
//! A target does not only ask "does it panic": where a parser has a
//! writer, the target checks that the writer's text reads back the same
//! (IPC codec, the UAPI request, the `get` reply, the wire messages), and
//! where two entry points must agree, that they do (a message's type
//! check and its parser; reading a line in one buffer or in many). An
//! assertion failing here is a finding, like a panic in the parser.
//!
//! Modules: [`wire`] (the four WireGuard messages), [`data`] (opening
//! type-4 packets with fixed keypairs), [`ipc`] (one decoder per channel
//! direction), [`uapi`] (the userspace API's request and reply parsers),
//! [`config`] (the configuration file), [`seeds`] (the corpus).

pub mod config;
pub mod data;
pub mod ipc;
pub mod seeds;
pub mod uapi;
pub mod wire;

pub use config::config;
pub use data::data_open;
pub use ipc::{
    ipc_crypto_to_handshake, ipc_crypto_to_parent, ipc_handshake_to_crypto,
    ipc_handshake_to_parent, ipc_handshake_to_transport, ipc_parent_to_crypto,
    ipc_parent_to_handshake, ipc_parent_to_transport, ipc_transport_to_handshake,
    ipc_transport_to_parent,
};
pub use uapi::{uapi_reply, uapi_request};
pub use wire::wire;

/// A fuzz target: its name (the binary's, and its corpus directory's) and
/// what it runs on one input. Each returns whether the input was valid
/// (parsed, decoded, authenticated), which `gen-corpus` demands of every
/// seed and the fuzzer ignores.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> bool,
}

/// A [`Target`] for each function, named after it (so a target's name,
/// its function, its binary and its corpus directory are one word).
macro_rules! targets {
    ($($f:ident),* $(,)?) => {
        &[$(Target { name: stringify!($f), run: $f }),*]
    };
}

/// Every target; `gen-corpus` checks that each has its file in
/// `fuzz/fuzz_targets/` and each file there is one of these.
pub const TARGETS: &[Target] = targets![
    wire,
    data_open,
    ipc_parent_to_crypto,
    ipc_crypto_to_parent,
    ipc_handshake_to_crypto,
    ipc_crypto_to_handshake,
    ipc_parent_to_handshake,
    ipc_handshake_to_parent,
    ipc_parent_to_transport,
    ipc_transport_to_parent,
    ipc_transport_to_handshake,
    ipc_handshake_to_transport,
    uapi_request,
    uapi_reply,
    config,
];
