//! End-to-end test harness for wgd: network namespaces, processes, peers
//! (wireguard-go now, wgd and a kernel peer later) and traffic checks.
//!
//! The tests run as root and touch only what they create. The rules every
//! test built on this crate follows:
//!
//! - **Unique names.** Every namespace, veth and WireGuard interface name
//!   comes from [`names::unique_name`]: `wt` + 4 hex digits of the pid + a
//!   kind letter + a per-process counter, at most 15 characters. The UAPI
//!   socket directory `/var/run/wireguard` is shared by all namespaces, so
//!   WireGuard interface names are unique machine-wide
//!   ([`wggo::fresh_ifname`] also skips any name whose socket exists).
//! - **Namespaces are guards.** [`Netns::new`] creates a namespace and
//!   brings `lo` up; dropping it kills, by pid, every process started in it
//!   through [`Netns::spawn`] and deletes it. Veth ends are created directly
//!   inside their namespaces ([`link`]) and vanish with them. Outer and
//!   inner addresses come from 10.0.0.0/8 and fd00::/8 and exist only in
//!   the test's own namespaces; traffic goes only to those addresses.
//! - **Processes are guards.** A [`Child`] sends SIGTERM, then SIGKILL
//!   after a bounded grace, and reaps, always by its own pid and never by
//!   name. Its stdout and stderr go to temp files: [`Child::report`] gives
//!   them for a failure message, and a guard dropped during a panic prints
//!   them. One-shot commands ([`Netns::exec`], [`Netns::run`]) are killed
//!   if they overrun [`proc::COMMAND_TIMEOUT`].
//! - **Bounded waits only.** Tests never sleep; they poll with
//!   [`wait_until`] / [`wait_for`], which have a hard deadline and name what
//!   they waited for on timeout. Every loop is bounded in count and time.
//! - **No unwrap on foreign data.** What other processes print is parsed
//!   into [`Result`]s; tests use `expect` with a message saying what failed.
//!
//! Peers: [`WgGo`] runs `wireguard-go` with `WG_PROCESS_FOREGROUND=1` in a
//! namespace; the [`wg`] module (keys, `wg setconf`/`set`, `show dump`,
//! `latest-handshakes`, `transfer`) works on any implementation of the
//! userspace API, so wgd tests reuse it. A kernel peer built on
//! `/work/shared/tools/kernel-peer.sh` would plug in beside [`WgGo`]; see
//! the note at the top of [`wggo`].
//!
//! Traffic: [`ping`], [`ping_once`] and [`tcp_transfer`], which opens its sockets from
//! threads that entered the namespaces ([`Netns::enter`]) and compares
//! SHA-256 and byte counts at both ends.

#![forbid(unsafe_code)]

pub mod capture;
pub mod error;
pub mod hsrate;
pub mod kernel;
pub mod memscan;
pub mod names;
pub mod netns;
pub mod proc;
pub mod storm;
pub mod traffic;
pub mod wait;
pub mod wg;
pub mod wgd;
pub mod wggo;

pub use error::{Error, Result};
pub use netns::{add_addr, link, link_with, netns_exists, Netns, Veth};
pub use proc::{pid_exists, Child};
pub use traffic::{ping, ping_once, tcp_transfer, Transfer, MIB};
pub use wait::{wait_for, wait_until};
pub use wg::{keypair, preshared_key, public_key, socket_path, InterfaceConfig, PeerConfig};
pub use wgd::Wgd;
pub use wggo::WgGo;
