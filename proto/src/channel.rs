//! A channel between two of wgd's processes. The untyped core (one message
//! per `SOCK_SEQPACKET` datagram, fds by `SCM_RIGHTS`) lives in `raw`, so
//! that the typed layer can be put in front of it here.

mod raw;

pub use raw::{Channel, ChannelError, MAX_FDS};
