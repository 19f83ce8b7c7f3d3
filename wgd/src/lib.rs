//! wgd, the daemon: the privileged parent and the glue that turns each
//! role crate into a process.
//!
//! - [`parent`]: start-up, configuration fan-out, supervision, control
//!   socket. The only code that runs with privileges.
//! - [`roles`]: the role table and a child's entry point (privilege drop,
//!   then the role's loop from `wg-crypto`, `wg-handshake` or
//!   `wg-transport`).
//! - [`privdrop`]: the one audited privilege-drop module.
//! - [`config`]: the wg(8)-format configuration file.
//! - [`uapi`]: the cross-platform userspace API (`wg(8)` talks it).
//! - [`net`]: opening the tun device and the sockets.
//! - [`logging`]: `LOG_LEVEL`-controlled stderr logging.

pub mod config;
pub mod logging;
pub mod net;
pub mod parent;
pub mod privdrop;
pub mod roles;
pub mod uapi;
