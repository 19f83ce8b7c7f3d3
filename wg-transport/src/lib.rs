//! The transport role's logic: the data plane of wgd.
//!
//! Everything here runs inside the unprivileged transport process, which
//! holds only the tun device and the UDP sockets. It never sees a static
//! key or a PSK: it is handed finished session keys by the handshake role.
//!
//! - [`allowed_ips`]: the cryptokey-routing table (longest-prefix match).
//! - [`replay`]: the receive replay window (RFC 6479).
//! - [`aead`]: the one seal/open pair of the data path.
//! - [`keypair`]: session keypairs and the previous/current/next slots.
//! - [`data`]: encapsulation and decapsulation of type-4 data messages.
//! - [`udp`]: batched UDP receive and send (recvmmsg/sendmmsg, UDP GSO).
//! - [`gso`]: the tun device's offload header; splitting its super-packets.
//! - [`gro`]: merging received TCP segments into super-packets for the tun.
//! - [`checksum`]: the Internet checksum those two need.
//! - [`device`]: the transport process's loop over tun, UDP and channels.
//! - [`orders`]: the checks on the handshake role's orders.
//! - [`pool`]: the worker threads that seal and open big batches with it.
//! - [`ratelimit`]: the per-source limit on handshake messages.

pub mod aead;
pub mod allowed_ips;
pub mod checksum;
pub mod data;
pub mod device;
pub mod gro;
pub mod gso;
pub mod keypair;
pub mod orders;
pub mod pool;
pub mod ratelimit;
pub mod replay;
pub mod udp;

#[cfg(test)]
mod testpkt;

/// The unit tests measure heap per peer and per prefix with proto's
/// counting allocator.
#[cfg(test)]
#[global_allocator]
static COUNTING: proto::alloc_count::Counting = proto::alloc_count::Counting;
