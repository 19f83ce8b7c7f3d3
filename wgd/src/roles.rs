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
//! | transport | `_wgd-net` | parent, handshake | tun + UDP fds from the parent; `SCHED_RR` while busy, set by the parent ([`crate::sched`]) |
//! | handshake | `_wgd-hs` | parent, transport, crypto | |
//! | crypto | `_wgd-crypto` | parent, handshake | memory locked before the drop |
//!
//! Every child then calls the one privilege-drop function,
//! [`crate::privdrop::drop_child_privileges`], sets its resource limits
//! and installs its seccomp filter (the lists below, each beside its row)
//! before it reads a single message.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use nix::unistd::{Gid, Uid};
use proto::channel::{Channel, ChannelError};
use proto::ipc::{
    CryptoToHandshake, CryptoToParent, HandshakeToCrypto, HandshakeToParent, HandshakeToTransport,
    ParentToCrypto, ParentToHandshake, ParentToTransport, TransportToHandshake, TransportToParent,
};

use crate::confine::{any, eq, masked, only, Allow};
use crate::privdrop::{drop_child_privileges, lock_memory, Identity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Transport,
    Handshake,
    Crypto,
}

/// One row of the roles table: what a role is and what the kernel holds it
/// to after its privilege drop (see [`crate::confine`]).
pub struct RoleSpec {
    pub role: Role,
    pub name: &'static str,
    pub lock_memory: bool,
    /// `RLIMIT_NOFILE`: one above the highest descriptor the role needs.
    pub nofile: u64,
    /// Its seccomp allowlist, on top of [`COMMON_SYSCALLS`].
    pub syscalls: &'static [Allow],
}

pub const ROLES: [RoleSpec; 3] = [
    // Holds the static private key and the PSKs. Descriptors: stdio, its
    // two channels (3, 4); it receives none.
    RoleSpec {
        role: Role::Crypto,
        name: "crypto",
        lock_memory: true,
        nofile: 8,
        syscalls: CRYPTO_SYSCALLS,
    },
    // Parses handshake packets, runs the timers. Descriptors: stdio, its
    // three channels (3, 4, 5); it receives none.
    RoleSpec {
        role: Role::Handshake,
        name: "handshake",
        lock_memory: false,
        nofile: 8,
        syscalls: HANDSHAKE_SYSCALLS,
    },
    // The data plane. Descriptors: stdio, two channels (3, 4), the tun
    // device and two UDP sockets (5-7), and two new sockets while a
    // listen-port change replaces the old ones (8, 9).
    RoleSpec {
        role: Role::Transport,
        name: "transport",
        lock_memory: false,
        nofile: 12,
        syscalls: TRANSPORT_SYSCALLS,
    },
];

// ------------------------------------------------------ seccomp lists ----
//
// Found with `strace -f` under the end-to-end tests (pairs, datapath,
// uapi, daemon: rekeys, roaming, a listen-port change, paged status) and
// kept as small as that allows. Everything here runs after the privilege
// drop; what a role does before (loading, the drop itself) is allowed by
// the parent's list, which a restarted role inherits. Filters are
// installed before a role reads its first message; a call not listed
// kills the process with SIGSYS.

/// PROT_EXEC: no role maps executable memory after start.
const PROT_EXEC: u64 = libc::PROT_EXEC as u64;

/// Every role, after its drop.
pub const COMMON_SYSCALLS: &[Allow] = &[
    any(
        libc::SYS_read,
        "read a channel message's bytes (and the tun device, in transport)",
    ),
    any(
        libc::SYS_write,
        "the log line to its stderr pipe (and the tun device, in transport)",
    ),
    any(
        libc::SYS_poll,
        "wait on its channels (and sockets), with the timer's timeout",
    ),
    any(
        libc::SYS_recvmsg,
        "receive one channel message, with descriptors (SCM_RIGHTS)",
    ),
    any(libc::SYS_sendmsg, "send one channel message"),
    any(
        libc::SYS_getrandom,
        "randomness: ephemeral keys, cookie secret, indices, jitter",
    ),
    any(libc::SYS_brk, "the heap"),
    only(
        libc::SYS_mmap,
        "large allocations, never executable",
        &[masked(2, PROT_EXEC, 0)],
    ),
    any(libc::SYS_munmap, "free large allocations"),
    any(libc::SYS_mremap, "grow large allocations"),
    any(libc::SYS_madvise, "the allocator returning memory"),
    any(
        libc::SYS_futex,
        "uncontended std locks (stderr) may still wake",
    ),
    any(
        libc::SYS_clock_gettime,
        "the clock, when the vDSO cannot answer",
    ),
    any(libc::SYS_rt_sigreturn, "return from a signal handler"),
    any(
        libc::SYS_restart_syscall,
        "the kernel resumes a poll interrupted by a stop (SIGSTOP, SIGCONT)",
    ),
    any(libc::SYS_close, "close its descriptors on the way out"),
    any(
        libc::SYS_sigaltstack,
        "std removes its stack-overflow guard at exit",
    ),
    only(
        libc::SYS_fcntl,
        "std checks a descriptor is open before closing it",
        &[eq(1, libc::F_GETFD as u64)],
    ),
    any(libc::SYS_exit_group, "exit"),
    any(libc::SYS_exit, "exit (thread)"),
];

/// Crypto: its two channels and memory, nothing else. No socket, connect,
/// open or execve in any form; no descriptor made or changed.
pub const CRYPTO_SYSCALLS: &[Allow] = &[];

/// Handshake: its three channels and memory. No open, no socket.
pub const HANDSHAKE_SYSCALLS: &[Allow] = &[];

/// Transport: the descriptors it was given, and nothing that makes a new
/// one but what a `NewSockets` message carries: no socket, no open, no
/// fork.
pub const TRANSPORT_SYSCALLS: &[Allow] = &[
    any(libc::SYS_recvmmsg, "read UDP datagrams in batches"),
    any(libc::SYS_sendmmsg, "send UDP datagrams in batches"),
    only(
        libc::SYS_fcntl,
        "make the tun device non-blocking (get flags)",
        &[eq(1, libc::F_GETFL as u64)],
    ),
    only(
        libc::SYS_fcntl,
        "make the tun device non-blocking (set flags)",
        &[eq(1, libc::F_SETFL as u64)],
    ),
    only(
        libc::SYS_ioctl,
        "make a new UDP socket non-blocking",
        &[eq(1, libc::FIONBIO)],
    ),
    only(
        libc::SYS_ioctl,
        "TUNGETIFF once at start: whether the tun device frames packets with a virtio_net_hdr (offloads on)",
        &[eq(1, libc::TUNGETIFF)],
    ),
    only(
        libc::SYS_ioctl,
        "SIOCGIFMTU on a UDP socket, once a second: the tunnel's MTU, where data padding stops (as in Linux)",
        &[eq(1, libc::SIOCGIFMTU)],
    ),
    only(
        libc::SYS_setsockopt,
        "IP_PKTINFO on a new IPv4 socket (replies from the address the peer used)",
        &[eq(1, libc::SOL_IP as u64), eq(2, libc::IP_PKTINFO as u64)],
    ),
    only(
        libc::SYS_setsockopt,
        "UDP_GRO on a new socket (a sender's run of datagrams in one read)",
        &[eq(1, libc::SOL_UDP as u64), eq(2, libc::UDP_GRO as u64)],
    ),
    only(
        libc::SYS_setsockopt,
        "IPV6_RECVPKTINFO on a new IPv6 socket",
        &[
            eq(1, libc::SOL_IPV6 as u64),
            eq(2, libc::IPV6_RECVPKTINFO as u64),
        ],
    ),
    only(
        libc::SYS_rt_sigprocmask,
        "a worker thread's exit, when the role ends: glibc blocks every signal in it (blocking only)",
        &[eq(0, libc::SIG_BLOCK as u64)],
    ),
    any(
        libc::SYS_clock_nanosleep,
        "back off a moment when a send queue is full",
    ),
    any(
        libc::SYS_nanosleep,
        "back off a moment when a send queue is full",
    ),
];

/// The parent (installed together with the roles' lists, since a
/// restarted role runs under both filters): its own jobs (control socket and its client threads, the
/// UDP sockets it re-binds and marks, deleting the interface over
/// netlink, re-reading key files for a restart, reaping, ending and
/// restarting the roles), and, since a restarted role inherits this
/// filter, what a role does from `fork(2)` to its own filter: the child's
/// set-up before exec, loading the binary, the privilege drop.
pub const PARENT_SYSCALLS: &[Allow] = &[
    // Its own work.
    any(
        libc::SYS_read,
        "control clients, the signalfd, log pipes, key files",
    ),
    any(libc::SYS_write, "its log, replies"),
    any(libc::SYS_poll, "the supervisor's loop"),
    any(libc::SYS_accept4, "control clients"),
    any(libc::SYS_shutdown, "hang up the roles' channels"),
    any(libc::SYS_recvfrom, "control requests"),
    any(libc::SYS_sendto, "control replies, the netlink request"),
    any(libc::SYS_recvmsg, "channel answers, the netlink ack"),
    any(libc::SYS_sendmsg, "channel requests with descriptors"),
    any(
        libc::SYS_setsockopt,
        "timeouts, SO_MARK, socket options of new UDP sockets",
    ),
    any(libc::SYS_getsockopt, "socket options"),
    any(libc::SYS_getsockname, "the port of a new UDP socket"),
    any(libc::SYS_bind, "a new UDP socket (listen-port change)"),
    only(
        libc::SYS_socket,
        "new UDP sockets (IPv4)",
        &[eq(0, libc::AF_INET as u64)],
    ),
    only(
        libc::SYS_socket,
        "new UDP sockets (IPv6)",
        &[eq(0, libc::AF_INET6 as u64)],
    ),
    only(
        libc::SYS_socket,
        "RTM_DELLINK when failing closed",
        &[eq(0, libc::AF_NETLINK as u64)],
    ),
    only(
        libc::SYS_socket,
        "if_nametoindex",
        &[eq(0, libc::AF_UNIX as u64)],
    ),
    any(libc::SYS_socketpair, "the channels of restarted roles"),
    any(
        libc::SYS_pipe2,
        "log pipes of restarted roles; std's spawn status pipe",
    ),
    any(libc::SYS_ioctl, "FIONBIO, SIOCGIFINDEX"),
    any(libc::SYS_fcntl, "descriptor flags"),
    any(libc::SYS_close, "descriptors"),
    any(libc::SYS_dup, "descriptors"),
    any(libc::SYS_dup2, "descriptors"),
    any(libc::SYS_dup3, "descriptors"),
    any(libc::SYS_openat, "key files (restart), /proc, the loader"),
    any(
        libc::SYS_statx,
        "does the control socket / interface still exist",
    ),
    any(libc::SYS_newfstatat, "file metadata"),
    any(libc::SYS_fstat, "file metadata"),
    any(libc::SYS_lseek, "file reads"),
    any(libc::SYS_unlink, "remove the control socket"),
    any(libc::SYS_unlinkat, "remove the control socket"),
    any(libc::SYS_wait4, "reap roles, see them stop"),
    any(libc::SYS_waitid, "reap roles"),
    only(
        libc::SYS_kill,
        "end a stopped or stuck role",
        &[eq(1, libc::SIGKILL as u64)],
    ),
    any(libc::SYS_clone, "restart a role (fork)"),
    any(libc::SYS_clone3, "control-client and log-relay threads"),
    any(
        libc::SYS_execve,
        "restart a role (re-exec of /proc/self/exe)",
    ),
    any(libc::SYS_set_robust_list, "new threads"),
    any(libc::SYS_rseq, "new threads"),
    any(libc::SYS_sigaltstack, "new threads' stack-overflow guard"),
    any(libc::SYS_sched_getaffinity, "std's thread set-up"),
    any(libc::SYS_gettid, "std's thread set-up"),
    any(
        libc::SYS_prctl,
        "thread names; a role's drop (capabilities, no_new_privs, dumpable)",
    ),
    any(libc::SYS_mmap, "memory, thread stacks, the loader"),
    any(libc::SYS_mprotect, "thread stack guards, the loader"),
    any(libc::SYS_munmap, "memory"),
    any(libc::SYS_mremap, "memory"),
    any(libc::SYS_madvise, "memory"),
    any(libc::SYS_brk, "the heap"),
    any(libc::SYS_futex, "locks between threads"),
    any(libc::SYS_getrandom, "std's hash seeds"),
    any(
        libc::SYS_clock_gettime,
        "the clock, when the vDSO cannot answer",
    ),
    any(libc::SYS_clock_nanosleep, "short bounded waits"),
    any(libc::SYS_nanosleep, "short bounded waits"),
    any(libc::SYS_rt_sigprocmask, "signal masks (threads, children)"),
    any(
        libc::SYS_rt_sigaction,
        "signal dispositions (std, children)",
    ),
    any(libc::SYS_rt_sigreturn, "return from a signal handler"),
    any(libc::SYS_exit, "thread exit"),
    any(libc::SYS_exit_group, "exit"),
    // A role between fork and its own filter (also run by the parent at
    // its start, before this filter existed).
    any(libc::SYS_setsid, "a role's own session"),
    any(
        libc::SYS_close_range,
        "a role closes what it must not inherit",
    ),
    any(libc::SYS_arch_prctl, "the loader (TLS)"),
    any(libc::SYS_set_tid_address, "the loader"),
    any(libc::SYS_access, "the loader"),
    any(libc::SYS_pread64, "the loader"),
    any(
        libc::SYS_prlimit64,
        "stack limit; a role's RLIMIT_MEMLOCK and its limits",
    ),
    any(libc::SYS_setrlimit, "a role's limits"),
    any(libc::SYS_getrlimit, "limits"),
    any(libc::SYS_mlockall, "crypto locks its memory"),
    any(
        libc::SYS_sched_setscheduler,
        "the parent sets the transport's priority (crate::sched); not in any role's own list",
    ),
    any(libc::SYS_munlockall, "crypto gives up locking"),
    any(libc::SYS_chroot, "a role's chroot"),
    any(libc::SYS_chdir, "a role's chdir(\"/\")"),
    any(libc::SYS_setgroups, "a role's drop"),
    any(libc::SYS_setresgid, "a role's drop"),
    any(libc::SYS_setresuid, "a role's drop"),
    any(libc::SYS_setgid, "a role checks it cannot return to root"),
    any(libc::SYS_setuid, "a role checks it cannot return to root"),
    any(libc::SYS_getgroups, "a role verifies its drop"),
    any(libc::SYS_getresuid, "a role verifies its drop"),
    any(libc::SYS_getresgid, "a role verifies its drop"),
    any(libc::SYS_capget, "a role verifies its drop"),
    any(libc::SYS_capset, "a role clears its capabilities"),
    any(libc::SYS_seccomp, "a role installs its own filter"),
    // The keyring calls of a restarted role (crate::keyring), before its
    // own filter, which allows none of them. Argument 0 of keyctl is
    // the operation.
    only(
        libc::SYS_keyctl,
        "transport, handshake: leave the daemon's session keyring (JOIN_SESSION_KEYRING)",
        &[eq(0, 1)],
    ),
    only(
        libc::SYS_keyctl,
        "crypto: make its wrapping key readable by possession only (SETPERM)",
        &[eq(0, 5)],
    ),
    only(
        libc::SYS_keyctl,
        "crypto: find its wrapping key (SEARCH)",
        &[eq(0, 10)],
    ),
    only(
        libc::SYS_keyctl,
        "crypto: read its wrapping key (READ)",
        &[eq(0, 11)],
    ),
    any(
        libc::SYS_add_key,
        "crypto: create the wrapping key (first start only)",
    ),
    any(libc::SYS_getpid, "std"),
    any(libc::SYS_getuid, "std"),
    any(libc::SYS_geteuid, "std"),
    any(libc::SYS_readlink, "std's current_exe"),
];

impl crate::privdrop::RoleUsers {
    /// The user `role` runs as.
    pub fn of(&self, role: Role) -> &Identity {
        match role {
            Role::Transport => &self.transport,
            Role::Handshake => &self.handshake,
            Role::Crypto => &self.crypto,
        }
    }
}

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
    crate::logging::init_role();
    crate::confine::name_process(spec.name);
    // SAFETY: this is the child the parent started as `spec.role`, and
    // nothing has opened a descriptor yet.
    let ends = unsafe { ChildEnds::inherit(spec.role) };
    if spec.lock_memory {
        if let Err(e) = lock_memory() {
            tracing::warn!("could not lock memory, key material may be swapped: {e}");
        }
    }
    if let Err(e) = crate::confine::exclude_from_core_dumps() {
        tracing::warn!("could not keep memory out of core dumps: {e}");
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
    // Crypto takes the key that wraps the secrets the parent keeps for a
    // restart; the others leave the session that holds it. Both before
    // the filter, which allows no keyring call.
    let wrapping = if spec.role == Role::Crypto {
        match crate::keyring::wrapping_key() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(
                    "no wrapping key in the kernel keyring ({e}): secrets given inline will not survive this role's death"
                );
                None
            }
        }
    } else {
        if let Err(e) = crate::keyring::leave_session() {
            tracing::warn!("could not leave the daemon's session keyring: {e}");
        }
        None
    };
    // The transport's workers, started now: after the drop, so that they
    // hold only what this thread kept (capabilities are per thread), and
    // before the limits and the filter, which forbid making a thread.
    let workers = if spec.role == Role::Transport {
        let n = transport_workers();
        match wg_transport::pool::Workers::new(n) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("no transport workers ({e}): one thread does all the work");
                wg_transport::pool::Workers::none()
            }
        }
    } else {
        wg_transport::pool::Workers::none()
    };
    // Only crypto may lock memory (it did above); the others may not.
    let memlock = (!spec.lock_memory).then_some(0);
    if let Err(e) = crate::confine::set_role_limits(spec.nofile, memlock) {
        tracing::error!("resource limits: {e}");
        return ExitCode::from(1);
    }
    #[cfg(feature = "test-hooks")]
    {
        crate::confine::test_hook::arm(spec.name);
        crate::hostile::protocol::arm(spec.name);
    }
    if let Err(e) = crate::confine::install(&[COMMON_SYSCALLS, spec.syscalls]) {
        tracing::error!("{e}");
        return ExitCode::from(1);
    }
    tracing::debug!(uid = %a.uid, "privileges dropped, confined");
    match ends {
        ChildEnds::Crypto { parent, handshake } => {
            #[cfg(feature = "test-hooks")]
            if crate::hostile::protocol::is_hostile("crypto") {
                crate::hostile::protocol::crypto(&parent);
            }
            let why = wg_crypto::process::run(&parent, &handshake, wrapping);
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
            tracing::debug!(workers = workers.count(), "transport workers");
            dev.set_workers(workers);
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

/// How many worker threads the transport starts: two fewer than the CPUs
/// it may run on, at most [`wg_transport::pool::MAX_WORKERS`], so none on
/// one or two CPUs. Per packet, the kernel (tun reads and writes, UDP,
/// the stack) and the application do about as much work as the
/// transport's thread, so one CPU is left to them: on this project's
/// 2-core machine, with both ends of `scripts/bench.sh` sharing it, the
/// transport used 67 % of a CPU for wgd → wireguard-go while the machine
/// was saturated, and one worker made it 75-83 % (wake-ups, polling)
/// taken from the peer, for less throughput, not more. Workers pay off
/// only where a CPU would otherwise idle. `WGD_TRANSPORT_WORKERS=N`
/// (passed on by the parent) sets the count.
fn transport_workers() -> usize {
    if let Some(n) = std::env::var("WGD_TRANSPORT_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return n.min(wg_transport::pool::MAX_WORKERS);
    }
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(2))
        .unwrap_or(0)
        .min(wg_transport::pool::MAX_WORKERS)
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
