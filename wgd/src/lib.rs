//! wgd, the daemon: the privileged parent and the glue that turns each
//! role crate into a process.
//!
//! - [`parent`]: start-up and supervision; with `control` (configuration
//!   fan-out, the control socket's clients), `spawn` (re-exec of a role)
//!   and `daemon` (going to the background), the only code that runs with
//!   privileges.
//! - [`roles`]: the role table, the one maker of typed channel ends, and a
//!   child's entry point (privilege drop, then the role's loop from
//!   `wg-crypto`, `wg-handshake` or `wg-transport`).
//! - [`privdrop`]: the one audited privilege-drop module.
//! - [`confine`]: seccomp filters (the lists are in [`roles`]), resource
//!   limits; `journal`: the configuration, without secrets, that a
//!   restart of the roles applies again.
//! - [`keyring`]: where the crypto role keeps the key that wraps the
//!   secrets the parent keeps for a restart.
//! - [`net`]: opening the tun device and the sockets.
//! - [`logging`]: `LOG_LEVEL`-controlled stderr logging.
//!
//! The configuration file's format and the userspace API (`wg(8)` talks
//! it) are the `wg-config` crate's, shared with wgctl: the parent parses
//! the one and serves the other with its types.

/// Writes one line to stderr, ignoring failure: a closed terminal must
/// not turn a clean error exit into a panic, as `eprintln!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod confine;
pub(crate) mod control;
pub(crate) mod daemon;
#[cfg(feature = "test-hooks")]
pub mod hostile;
pub(crate) mod journal;
pub mod keyring;
pub mod logging;
pub mod net;
pub mod parent;
pub mod privdrop;
pub mod roles;
pub mod sched;
pub(crate) mod spawn;
