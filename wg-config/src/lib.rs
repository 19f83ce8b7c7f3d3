//! The language wgd and wgctl share: what the daemon and its control tool
//! must agree on, kept out of both so that neither links the other.
//!
//! Callers: wgd's parent (it reads the configuration file and serves the
//! userspace API) and wgctl (it writes and applies configuration files
//! and is a client of the userspace API). No role process uses this
//! crate: a role's code must not grow a text parser it does not need.
//! This crate does no I/O of its own beyond what a caller hands it (a
//! reader, a path, a resolver): no sockets, no processes.
//!
//! - [`config`]: wg(8)'s configuration file format, read with
//!   `FILE:LINE: what is wrong` errors and written back (`showconf`).
//! - [`uapi`]: the cross-platform userspace API on
//!   `/var/run/wireguard/IFNAME.sock`: the request and reply types, the
//!   server's request parser and reply writer, the client's request
//!   writer and reply parser.
//! - [`cidr`]: the one allowed-IP prefix parser, in wg(8)'s dialect or the
//!   userspace API's, and the masking both ends apply.
//! - [`keys`]: key generation, public-key derivation, a secret's text.
//! - [`keyfile`]: reading a key's text from a file, bounded and zeroized.
//! - [`display`]: addresses as wg(8) prints them.
//! - [`wipe`]: reading text that may hold a secret without leaving copies
//!   (the configuration file, the userspace API's requests).
//!
//! Key types themselves (`PublicKey`, `SecretKey`) and the key-derived
//! address are `proto`'s, shared with every process.

#![forbid(unsafe_code)]

pub mod cidr;
pub mod config;
pub mod display;
pub mod keyfile;
pub mod keys;
pub mod uapi;
pub mod wipe;
