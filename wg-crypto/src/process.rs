//! The crypto process's main loop.
//!
//! It serves exactly two channels — configuration from the parent, and the
//! handshake role's questions — one request, one answer, in order, each
//! answer carrying its request's id. The channels arrive typed from wgd's
//! roles table; this loop cannot send or read any other enum. It opens
//! nothing: by the time this runs the process has dropped every privilege,
//! is chrooted to an empty directory and holds no socket but these two.
//! Either peer hanging up ends the loop: the parent then fails closed.
//!
//! When no request waits, the loop computes the peers' static-static DH
//! values still unknown after a configuration change
//! ([`KeyStore::precompute`]), in slices of [`PRECOMPUTE_SLICE`], so that
//! the change itself is answered at once and a request waits at most one
//! slice.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use proto::channel::{Channel, ChannelError};
use proto::ipc::{CryptoToHandshake, CryptoToParent, HandshakeToCrypto, ParentToCrypto};

use crate::wrap::WrappingKey;
use crate::KeyStore;

/// Longest stretch of idle-time precomputation between two looks at the
/// channels (about 40 X25519 operations in a release build).
pub const PRECOMPUTE_SLICE: Duration = Duration::from_millis(2);

/// Why the loop ended.
#[derive(Debug, thiserror::Error)]
pub enum CryptoExit {
    #[error("parent channel closed")]
    ParentGone,
    #[error("handshake channel: {0}")]
    Handshake(ChannelError),
    #[error("parent channel: {0}")]
    Parent(ChannelError),
    #[error("poll: {0}")]
    Poll(nix::errno::Errno),
}

/// Serves until a channel closes or misbehaves. `wrapping` is the key
/// that seals secrets for the parent to keep (see [`crate::wrap`]).
pub fn run(
    parent: &Channel<CryptoToParent, ParentToCrypto>,
    handshake: &Channel<CryptoToHandshake, HandshakeToCrypto>,
    wrapping: Option<WrappingKey>,
) -> CryptoExit {
    let mut store = KeyStore::with_wrapping_key(wrapping);
    let mut precompute = false;
    loop {
        let (p_ready, h_ready) = {
            let mut fds = [
                PollFd::new(parent.as_fd(), PollFlags::POLLIN),
                PollFd::new(handshake.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = if precompute {
                PollTimeout::ZERO
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                // Nothing waits: idle time.
                Ok(0) => {
                    precompute = store.precompute(PRECOMPUTE_SLICE);
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return CryptoExit::Poll(e),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if p_ready {
            match parent.recv_request() {
                Ok((to, msg)) => {
                    let reply = store.handle_parent(msg);
                    precompute = store.precompute_pending() > 0;
                    if let Err(e) = parent.reply(to, &reply) {
                        return CryptoExit::Parent(e);
                    }
                }
                Err(ChannelError::Closed) => return CryptoExit::ParentGone,
                Err(e) => return CryptoExit::Parent(e),
            }
        }
        if h_ready {
            match handshake.recv_request() {
                Ok((to, msg)) => {
                    let reply = store.handle_handshake(msg);
                    if let Err(e) = handshake.reply(to, &reply) {
                        return CryptoExit::Handshake(e);
                    }
                }
                Err(e) => return CryptoExit::Handshake(e),
            }
        }
    }
}
