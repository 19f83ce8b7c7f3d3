//! The roles as one table, and how a child becomes one.
//!
//! The parent starts each child by re-executing its own binary
//! (`/proc/self/exe --role NAME ...`), so every role starts from a fresh
//! address space that never held the parent's configuration or secrets.
//! A child inherits nothing but its channels, at fixed descriptors from 3
//! on, in the order the table below lists them; everything else it needs
//! (the tun device and UDP sockets, for the transport) arrives later as
//! SCM_RIGHTS messages on its parent channel.
//!
//! This module is also the only place that hands out channel ends, and so
//! the only one that says which message enums each socketpair carries:
//! `channels` makes the five socketpairs for the parent, and a child
//! wraps its inherited descriptors with the same types. The roles' loops
//! (`wg-crypto`, `wg-handshake`, `wg-transport`, and the parent's
//! `control`) take their ends already typed.
//!
//! | role | runs as | channels (fd 3, 4, …) | extra |
//! | --- | --- | --- | --- |
//! | transport | the net user | parent, handshake | tun + UDP fds from the parent |
//! | handshake | the net user | parent, transport, crypto | |
//! | crypto | the crypto user | parent, handshake | memory locked before the drop |
//!
//! Every child then calls the one privilege-drop function,
//! [`crate::privdrop::drop_child_privileges`], before it reads a single
//! message.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use nix::unistd::{Gid, Uid};
use proto::channel::{Channel, ChannelError};
use proto::ipc::{
    CryptoToHandshake, CryptoToParent, HandshakeToCrypto, HandshakeToParent, HandshakeToTransport,
    ParentToCrypto, ParentToHandshake, ParentToTransport, TransportToHandshake, TransportToParent,
};

use crate::privdrop::{drop_child_privileges, lock_memory, Identity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Transport,
    Handshake,
    Crypto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    /// `--user`: the transport and handshake roles.
    Net,
    /// `--crypto-user`: never the same uid as [`UserKind::Net`], so the
    /// handshake role cannot signal or trace the key holder.
    Crypto,
}

pub struct RoleSpec {
    pub role: Role,
    pub name: &'static str,
    pub user: UserKind,
    pub lock_memory: bool,
}

pub const ROLES: [RoleSpec; 3] = [
    RoleSpec {
        role: Role::Crypto,
        name: "crypto",
        user: UserKind::Crypto,
        lock_memory: true,
    },
    RoleSpec {
        role: Role::Handshake,
        name: "handshake",
        user: UserKind::Net,
        lock_memory: false,
    },
    RoleSpec {
        role: Role::Transport,
        name: "transport",
        user: UserKind::Net,
        lock_memory: false,
    },
];

pub fn spec_by_name(name: &str) -> Option<&'static RoleSpec> {
    ROLES.iter().find(|r| r.name == name)
}

/// First inherited channel descriptor.
pub const FIRST_CHANNEL_FD: i32 = 3;

// ---------------------------------------------------------------- channels

// The five channels of the DESIGN topology (no transport ↔ crypto), each
// end named by what it sends and what it receives. `channels` types both
// ends of a pair as mirrors of each other, so the compiler checks that the
// child's type is the parent's reversed.
type ParentCrypto = Channel<ParentToCrypto, CryptoToParent>;
type CryptoParent = Channel<CryptoToParent, ParentToCrypto>;
type ParentHandshake = Channel<ParentToHandshake, HandshakeToParent>;
type HandshakeParent = Channel<HandshakeToParent, ParentToHandshake>;
type ParentTransport = Channel<ParentToTransport, TransportToParent>;
type TransportParent = Channel<TransportToParent, ParentToTransport>;
type HandshakeCrypto = Channel<HandshakeToCrypto, CryptoToHandshake>;
type CryptoHandshake = Channel<CryptoToHandshake, HandshakeToCrypto>;
type TransportHandshake = Channel<TransportToHandshake, HandshakeToTransport>;
type HandshakeTransport = Channel<HandshakeToTransport, TransportToHandshake>;

/// The parent's ends, one per role.
pub(crate) struct ParentEnds {
    pub(crate) crypto: ParentCrypto,
    pub(crate) handshake: ParentHandshake,
    pub(crate) transport: ParentTransport,
}

/// One child's ends. The order of each variant's fields is the order of
/// its descriptors from [`FIRST_CHANNEL_FD`] on, in [`ChildEnds::into_fds`]
/// and [`ChildEnds::inherit`] alike.
pub(crate) enum ChildEnds {
    Crypto {
        parent: CryptoParent,
        handshake: CryptoHandshake,
    },
    Handshake {
        parent: HandshakeParent,
        transport: HandshakeTransport,
        crypto: HandshakeCrypto,
    },
    Transport {
        parent: TransportParent,
        handshake: TransportHandshake,
    },
}

/// Bytes of handshake packets the transport may queue for the handshake
/// role: about 4,500 messages (each costs some 900 bytes of socket
/// memory), as Linux queues up to 4,096 incoming handshakes
/// (MAX_QUEUED_INCOMING_HANDSHAKES). At the default of `wmem_default`
/// (208 KiB, ~230 messages) a storm of a thousand initiations loses three
/// in four: the transport drops what does not fit rather than block the
/// data path, and their peers retry only REKEY_TIMEOUT later
/// (`scripts/storm.sh`, issue 10: 1,000 peers at once took three rounds,
/// 10.7 s, with ~700 initiations lost; with this queue, two rounds, 5.4 s,
/// none lost). Queued packets are answered within a second or two: the
/// role answers ~1,000 full handshakes per second, and under load a
/// packet without MAC2 costs it only a cookie reply.
const HANDSHAKE_QUEUE_BYTES: usize = 4 << 20;

/// Gives the transport's end toward the handshake role a send buffer of
/// [`HANDSHAKE_QUEUE_BYTES`]: SO_SNDBUFFORCE (the parent holds
/// CAP_NET_ADMIN), else what `net.core.wmem_max` allows. Best effort: a
/// smaller queue drops more under a storm but is not an error.
fn deepen_handshake_queue(end: &TransportHandshake) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&end.as_fd(), sockopt::SndBufForce, &HANDSHAKE_QUEUE_BYTES).is_err() {
        let _ = setsockopt(&end.as_fd(), sockopt::SndBuf, &HANDSHAKE_QUEUE_BYTES);
    }
}

/// Makes the five socketpairs: the parent's ends, and each child's, in
/// the order of [`ROLES`].
pub(crate) fn channels() -> Result<(ParentEnds, [ChildEnds; 3]), ChannelError> {
    let (p_c, c_p): (ParentCrypto, CryptoParent) = Channel::pair()?;
    let (p_h, h_p): (ParentHandshake, HandshakeParent) = Channel::pair()?;
    let (p_t, t_p): (ParentTransport, TransportParent) = Channel::pair()?;
    let (h_c, c_h): (HandshakeCrypto, CryptoHandshake) = Channel::pair()?;
    let (t_h, h_t): (TransportHandshake, HandshakeTransport) = Channel::pair()?;
    deepen_handshake_queue(&t_h);
    let parent = ParentEnds {
        crypto: p_c,
        handshake: p_h,
        transport: p_t,
    };
    let children = [
        ChildEnds::Crypto {
            parent: c_p,
            handshake: c_h,
        },
        ChildEnds::Handshake {
            parent: h_p,
            transport: h_t,
            crypto: h_c,
        },
        ChildEnds::Transport {
            parent: t_p,
            handshake: t_h,
        },
    ];
    Ok((parent, children))
}

impl ChildEnds {
    pub(crate) fn role(&self) -> Role {
        match self {
            ChildEnds::Crypto { .. } => Role::Crypto,
            ChildEnds::Handshake { .. } => Role::Handshake,
            ChildEnds::Transport { .. } => Role::Transport,
        }
    }

    /// The descriptors to place at [`FIRST_CHANNEL_FD`].. in the child.
    pub(crate) fn into_fds(self) -> Vec<OwnedFd> {
        match self {
            ChildEnds::Crypto { parent, handshake } => vec![parent.into_fd(), handshake.into_fd()],
            ChildEnds::Handshake {
                parent,
                transport,
                crypto,
            } => vec![parent.into_fd(), transport.into_fd(), crypto.into_fd()],
            ChildEnds::Transport { parent, handshake } => {
                vec![parent.into_fd(), handshake.into_fd()]
            }
        }
    }

    /// A child's ends, from the descriptors it inherited.
    ///
    /// # Safety
    ///
    /// Call once, early in a child the parent started as `role`: the
    /// parent placed exactly that role's ends at [`FIRST_CHANNEL_FD`]..
    /// before exec (see `spawn`), and nothing else in this fresh process
    /// may have claimed them.
    unsafe fn inherit(role: Role) -> ChildEnds {
        // SAFETY: as the caller promised, for each `i` used below.
        let fd = |i: i32| unsafe { OwnedFd::from_raw_fd(FIRST_CHANNEL_FD + i) };
        match role {
            Role::Crypto => ChildEnds::Crypto {
                parent: Channel::from_fd(fd(0)),
                handshake: Channel::from_fd(fd(1)),
            },
            Role::Handshake => ChildEnds::Handshake {
                parent: Channel::from_fd(fd(0)),
                transport: Channel::from_fd(fd(1)),
                crypto: Channel::from_fd(fd(2)),
            },
            Role::Transport => ChildEnds::Transport {
                parent: Channel::from_fd(fd(0)),
                handshake: Channel::from_fd(fd(1)),
            },
        }
    }
}

/// Exit code of the transport when the tun device disappeared: the
/// interface was deleted, which is a request to stop, not a failure.
pub const EXIT_TUN_GONE: u8 = 3;

/// Arguments of a child after `--role NAME`.
struct ChildArgs {
    uid: Uid,
    gid: Gid,
    user: String,
    root: PathBuf,
}

fn parse_child_args(args: &[String]) -> Option<ChildArgs> {
    let mut uid = None;
    let mut gid = None;
    let mut user = None;
    let mut root = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--uid" => uid = value.parse().ok().map(Uid::from_raw),
            "--gid" => gid = value.parse().ok().map(Gid::from_raw),
            "--user" => user = Some(value.clone()),
            "--root" => root = Some(PathBuf::from(value)),
            _ => return None,
        }
    }
    Some(ChildArgs {
        uid: uid?,
        gid: gid?,
        user: user?,
        root: root?,
    })
}

/// Entry point of a re-executed child: `wgd --role NAME --uid U --gid G
/// --user NAME --root DIR`.
pub fn child_main(role_name: &str, args: &[String]) -> ExitCode {
    let Some(spec) = spec_by_name(role_name) else {
        say!("wgd: unknown role {role_name:?}");
        return ExitCode::from(2);
    };
    let Some(a) = parse_child_args(args) else {
        say!("wgd[{role_name}]: bad role arguments");
        return ExitCode::from(2);
    };
    crate::logging::init(spec.name);
    // SAFETY: this is the child the parent started as `spec.role`, and
    // nothing has opened a descriptor yet.
    let ends = unsafe { ChildEnds::inherit(spec.role) };
    if spec.lock_memory {
        if let Err(e) = lock_memory() {
            tracing::warn!("could not lock memory, key material may be swapped: {e}");
        }
    }
    let id = Identity {
        name: a.user,
        uid: a.uid,
        gid: a.gid,
    };
    if let Err(e) = drop_child_privileges(&id, &a.root) {
        tracing::error!("dropping privileges failed: {e}");
        return ExitCode::from(1);
    }
    tracing::debug!(uid = %a.uid, "privileges dropped");
    match ends {
        ChildEnds::Crypto { parent, handshake } => {
            let why = wg_crypto::process::run(&parent, &handshake);
            exit_for(
                spec.name,
                &why.to_string(),
                matches!(why, wg_crypto::process::CryptoExit::ParentGone)
                    || parent_hung_up(&parent),
            )
        }
        ChildEnds::Handshake {
            parent,
            transport,
            crypto,
        } => {
            let cfg = wg_handshake::Config {
                timers: test_timers(),
                ..Default::default()
            };
            let why = wg_handshake::process::run(&parent, &transport, &crypto, cfg);
            exit_for(
                spec.name,
                &why.to_string(),
                matches!(why, wg_handshake::process::HandshakeExit::ParentGone)
                    || parent_hung_up(&parent),
            )
        }
        ChildEnds::Transport { parent, handshake } => {
            let mut dev = match wg_transport::device::receive_device(&parent) {
                Ok(d) => d,
                Err(e) => return exit_for(spec.name, &e.to_string(), false),
            };
            let why = dev.run(&parent, &handshake);
            if let wg_transport::device::TransportExit::Tun(_) = why {
                tracing::info!("tun device gone: {why}");
                return ExitCode::from(EXIT_TUN_GONE);
            }
            exit_for(
                spec.name,
                &why.to_string(),
                matches!(why, wg_transport::device::TransportExit::ParentGone)
                    || parent_hung_up(&parent),
            )
        }
    }
}

/// Whether the parent has hung up this role's channel. When the parent
/// stops, it hangs up every role before anything else, so a role that
/// then loses another channel (its sibling exited first) is shutting down,
/// not failing.
fn parent_hung_up(parent: &impl AsFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(parent.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

fn exit_for(role: &str, why: &str, parent_gone: bool) -> ExitCode {
    if parent_gone {
        tracing::debug!("{role}: parent went away, exiting");
        ExitCode::SUCCESS
    } else {
        tracing::error!("{role}: {why}");
        ExitCode::from(1)
    }
}

/// The test-only knob: `WGD_TEST_REKEY_AFTER_SECS=N` makes sessions we
/// initiate rekey after N seconds instead of 120 (and lets initiations
/// follow each other every N seconds if N < 5), so tests can watch
/// several rekeys in a short transfer. Unset in production; the parent
/// passes it through only if set.
fn test_timers() -> wg_handshake::TimerConfig {
    let mut t = wg_handshake::TimerConfig::default();
    if let Some(secs) = std::env::var("WGD_TEST_REKEY_AFTER_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
    {
        t.rekey_after_time = std::time::Duration::from_secs(secs);
        // At most one initiation per REKEY_TIMEOUT: shorten it with the
        // rekey time so rekeys can follow each other that closely.
        t.rekey_timeout = t.rekey_timeout.min(t.rekey_after_time);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{getsockopt, sockopt};

    #[test]
    fn transport_can_queue_a_storm_of_handshake_packets() {
        let (_parent, children) = channels().expect("socketpairs");
        let end = children
            .into_iter()
            .find_map(|c| match c {
                ChildEnds::Transport { handshake, .. } => Some(handshake),
                _ => None,
            })
            .expect("the transport's ends");
        let got = getsockopt(&end.as_fd(), sockopt::SndBuf).expect("SO_SNDBUF");
        // Linux reports twice the size set (its bookkeeping share); as
        // root the parent may force it past net.core.wmem_max.
        if nix::unistd::geteuid().is_root() {
            assert!(got >= HANDSHAKE_QUEUE_BYTES, "SO_SNDBUF {got}");
        } else {
            assert!(got > 0);
        }
    }
}
