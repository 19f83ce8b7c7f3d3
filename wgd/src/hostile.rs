//! The hostile-role harness (issue 13): test builds only.
//!
//! Compiled with the `test-hooks` feature, which only the tests crate
//! turns on, and inert unless the parent was started with
//! `WGD_TEST_HOOKS`. It makes a role — already confined: its own uid, no
//! capability, its seccomp filter installed — do what an attacker with
//! code execution inside it would try, so the end-to-end tests in
//! `tests/tests/hostile.rs` can check that each attempt fails and that the
//! daemon stays correct or fails closed.
//!
//! Two kinds of attack:
//!
//! - **System calls** ([`Attack`]): with `WGD_TEST_HOOKS=1`, a `SIGUSR2`
//!   sent with `sigqueue(3)` carries an attack number and a target pid;
//!   the role's handler makes that call on that target. An allowlist
//!   violation kills the role (`SIGSYS`); a call that returns writes
//!   `hostile: attack N returned R errno E` to its log (standard error,
//!   which the parent relays), for the test to read.
//! - **Protocol** ([`protocol`]): with `WGD_TEST_HOOKS=hostile:ROLE`, a
//!   `SIGUSR1` makes that role abuse its channels (garbage, oversized and
//!   unexpected frames, descriptors, requests out of order, bursts) and
//!   log each answer as `hostile: WHAT: ANSWER`; the crypto role instead
//!   lies to the parent about its public key at once. The parent passes
//!   this only to the roles it starts first, so the roles it restarts are
//!   honest.

/// A system call a compromised role might try, by the number a test
/// sends; each names its target pid where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Attack {
    /// `open("/proc/TARGET/mem")`, to read another role's memory.
    ReadProcMem = 1,
    /// `process_vm_readv(TARGET, …)`.
    ProcessVmReadv = 2,
    /// `ptrace(PTRACE_SEIZE, TARGET)`.
    Ptrace = 3,
    /// `kill(TARGET, SIGKILL)`.
    Kill = 4,
    /// `open("/etc/wireguard/wg0.conf")`.
    OpenConfig = 5,
    /// `open("/proc/1/environ")`.
    OpenInitEnviron = 6,
    /// `socket(AF_INET, SOCK_DGRAM)`.
    SocketInet = 7,
    /// `socket(AF_NETLINK, …, NETLINK_ROUTE)`.
    SocketNetlink = 8,
    /// `socket(AF_UNIX)` and `connect` to a control socket.
    ConnectControl = 9,
    /// `fork()`.
    Fork = 10,
    /// `execve("/bin/sh")`.
    Execve = 11,
    /// `ioctl(0..2, TIOCSTI)`.
    Tiocsti = 12,
    /// `prlimit64(TARGET, RLIMIT_NOFILE, {0, 0})`: starve a sibling.
    Prlimit = 13,
    /// `mmap(PROT_WRITE | PROT_EXEC)`: a place to put code.
    MapExecutable = 14,
    /// `sched_setscheduler(0, SCHED_FIFO, 99)`: take the CPU from
    /// everything else (only the parent sets the transport's `SCHED_RR` 1).
    RaisePriority = 15,
    /// Spin on the CPU for [`SPIN`] (not in [`Attack::ALL`]: it is
    /// meant to succeed; the test watches the parent lower the
    /// transport's priority meanwhile).
    Spin = 16,
}

/// How long [`Attack::Spin`] keeps a CPU busy.
pub const SPIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Attack {
    pub const ALL: [Attack; 15] = [
        Attack::ReadProcMem,
        Attack::ProcessVmReadv,
        Attack::Ptrace,
        Attack::Kill,
        Attack::OpenConfig,
        Attack::OpenInitEnviron,
        Attack::SocketInet,
        Attack::SocketNetlink,
        Attack::ConnectControl,
        Attack::Fork,
        Attack::Execve,
        Attack::Tiocsti,
        Attack::Prlimit,
        Attack::MapExecutable,
        Attack::RaisePriority,
    ];

    /// The `sigqueue` value that asks for this attack on `target`.
    pub fn value(self, target: u32) -> u64 {
        (u64::from(self as u32) << 32) | u64::from(target)
    }
}

/// Formats `n` into `buf` from the end; async-signal-safe.
fn itoa(mut n: i64, buf: &mut [u8; 24]) -> &[u8] {
    let neg = n < 0;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10).unsigned_abs() as u8;
        n /= 10;
        if n == 0 || i == 1 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// Writes `hostile: attack N returned R errno E` to standard error with
/// raw writes (a signal handler may not allocate).
fn report(attack: u32, r: i64, errno: i32) {
    let mut line = [0u8; 96];
    let mut len = 0;
    let mut put = |s: &[u8]| {
        let n = s.len().min(line.len() - len);
        line[len..len + n].copy_from_slice(&s[..n]);
        len += n;
    };
    let mut b = [0u8; 24];
    put(b"info: hostile: attack ");
    put(itoa(i64::from(attack), &mut b));
    put(b" returned ");
    put(itoa(r, &mut b));
    put(b" errno ");
    put(itoa(i64::from(errno), &mut b));
    put(b"\n");
    // SAFETY: writes our own stack buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), len) };
}

/// Makes the system call `attack` asks for on `target`. Called from the
/// `SIGUSR2` handler of [`crate::confine::test_hook`]: raw system calls
/// only, no allocation.
pub(crate) fn syscall_attack(attack: u32, target: libc::pid_t) {
    // SAFETY: raw system calls on constant strings, stack buffers and
    // integers; each is expected to be refused (most fatally).
    let r = unsafe {
        match attack {
            1 => {
                // "/proc/" + pid + "/mem", built on the stack.
                let mut path = [0u8; 40];
                let mut b = [0u8; 24];
                let digits = itoa(i64::from(target), &mut b);
                let mut n = 0;
                for part in [&b"/proc/"[..], digits, &b"/mem\0"[..]] {
                    path[n..n + part.len()].copy_from_slice(part);
                    n += part.len();
                }
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_RDONLY,
                )
            }
            2 => {
                let mut buf = [0u8; 64];
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                // Any address: the call is what is refused.
                let remote = libc::iovec {
                    iov_base: 0x1000 as *mut libc::c_void,
                    iov_len: buf.len(),
                };
                libc::syscall(
                    libc::SYS_process_vm_readv,
                    target,
                    &local as *const libc::iovec,
                    1,
                    &remote as *const libc::iovec,
                    1,
                    0,
                )
            }
            3 => libc::syscall(libc::SYS_ptrace, libc::PTRACE_SEIZE, target, 0, 0),
            4 => libc::syscall(libc::SYS_kill, target, libc::SIGKILL),
            5 => libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/etc/wireguard/wg0.conf".as_ptr(),
                libc::O_RDONLY,
            ),
            6 => libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c"/proc/1/environ".as_ptr(),
                libc::O_RDONLY,
            ),
            7 => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0),
            8 => libc::syscall(
                libc::SYS_socket,
                libc::AF_NETLINK,
                libc::SOCK_RAW,
                libc::NETLINK_ROUTE,
            ),
            9 => {
                let fd = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    fd
                } else {
                    let mut addr: libc::sockaddr_un = std::mem::zeroed();
                    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                    let path = b"/var/run/wireguard/wg0.sock";
                    for (d, s) in addr.sun_path.iter_mut().zip(path) {
                        *d = *s as libc::c_char;
                    }
                    libc::syscall(
                        libc::SYS_connect,
                        fd,
                        &addr as *const libc::sockaddr_un,
                        std::mem::size_of::<libc::sockaddr_un>(),
                    )
                }
            }
            10 => {
                #[cfg(target_arch = "x86_64")]
                let r = libc::syscall(libc::SYS_fork);
                #[cfg(not(target_arch = "x86_64"))]
                let r = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
                if r == 0 {
                    // A child that got out: end it at once.
                    libc::_exit(0);
                }
                r
            }
            11 => {
                let argv = [c"/bin/sh".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null::<libc::c_char>()];
                libc::syscall(
                    libc::SYS_execve,
                    c"/bin/sh".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            }
            12 => {
                let c: libc::c_char = b'x' as libc::c_char;
                let mut r = 0;
                for fd in 0..3 {
                    r = libc::syscall(
                        libc::SYS_ioctl,
                        fd,
                        libc::TIOCSTI,
                        &c as *const libc::c_char,
                    );
                }
                r
            }
            13 => {
                let zero = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::syscall(
                    libc::SYS_prlimit64,
                    target,
                    libc::RLIMIT_NOFILE,
                    &zero as *const libc::rlimit,
                    std::ptr::null_mut::<libc::rlimit>(),
                )
            }
            14 => libc::syscall(
                libc::SYS_mmap,
                0,
                4096,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ),
            16 => {
                // clock_gettime through the vDSO: no system call.
                let mut now = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
                let end = now.tv_sec + SPIN.as_secs() as libc::time_t;
                let mut spins: i64 = 0;
                while now.tv_sec < end {
                    spins = spins.wrapping_add(1);
                    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
                }
                std::hint::black_box(spins).min(0)
            }
            15 => {
                let top = libc::sched_param { sched_priority: 99 };
                i64::from(libc::sched_setscheduler(
                    0,
                    libc::SCHED_FIFO,
                    &top as *const libc::sched_param,
                ))
            }
            _ => return,
        }
    };
    let errno = if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    report(attack, r, errno);
}

/// The protocol attacks of `WGD_TEST_HOOKS=hostile:ROLE`.
pub mod protocol {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::time::{Duration, Instant};

    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use proto::channel::Channel;
    use proto::ipc::{
        CryptoToHandshake, CryptoToParent, HandshakeToCrypto, HandshakeToTransport, ParentToCrypto,
        ParentToTransport, TransportToHandshake, TransportToParent,
    };
    use proto::keys::{HandshakeId, NoiseInitiation, NoiseResponse, PublicKey};

    use crate::roles::FIRST_CHANNEL_FD;
    use std::io::Write as _;

    /// Copies of the channel descriptors the attacks use, made before the
    /// role's filter (which has no `dup`): transport's parent and
    /// handshake ends, or handshake's crypto end.
    static FD_A: AtomicI32 = AtomicI32::new(-1);
    static FD_B: AtomicI32 = AtomicI32::new(-1);

    /// Whether this role is the one `WGD_TEST_HOOKS=hostile:ROLE` names.
    pub fn is_hostile(role: &str) -> bool {
        std::env::var("WGD_TEST_HOOKS")
            .ok()
            .and_then(|v| v.strip_prefix("hostile:").map(|r| r == role))
            .unwrap_or(false)
    }

    /// Arms `SIGUSR1` to run `role`'s attacks, if it is the hostile one.
    /// Called before the role's filter goes on. The handler runs them in
    /// the role's own thread while it waits in `poll` (the tests signal
    /// an idle daemon), which is why it may allocate: no lock is held.
    pub fn arm(role: &str) {
        if !is_hostile(role) {
            return;
        }
        // SAFETY: dup of descriptors this process holds (its channels,
        // placed at FIRST_CHANNEL_FD.. by the parent).
        let dup = |i: i32| unsafe { libc::dup(FIRST_CHANNEL_FD + i) };
        let handler: extern "C" fn(libc::c_int) = match role {
            "transport" => {
                FD_A.store(dup(0), Ordering::Relaxed);
                FD_B.store(dup(1), Ordering::Relaxed);
                on_sigusr1_transport
            }
            "handshake" => {
                FD_A.store(dup(2), Ordering::Relaxed);
                on_sigusr1_handshake
            }
            _ => return,
        };
        // SAFETY: installs a handler (see above for what it may do).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        tracing::warn!("hostile: SIGUSR1 runs this role's protocol attacks");
    }

    /// A channel on a copied descriptor, given back (not closed) by
    /// [`give_back`].
    fn borrow<Out, In>(fd: &AtomicI32) -> Option<Channel<Out, In>> {
        let raw = fd.load(Ordering::Relaxed);
        // SAFETY: `raw` is our copy, open for the life of the process; the
        // channel is turned back into the raw number before it drops.
        (raw >= 0).then(|| Channel::from_fd(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    fn give_back<Out, In>(c: Channel<Out, In>) {
        let _ = c.into_fd().into_raw_fd();
    }

    extern "C" fn on_sigusr1_transport(_: libc::c_int) {
        if let (Some(p), Some(h)) = (borrow(&FD_A), borrow(&FD_B)) {
            transport(&p, &h);
            give_back(p);
            give_back(h);
        }
    }

    extern "C" fn on_sigusr1_handshake(_: libc::c_int) {
        if let Some(c) = borrow(&FD_A) {
            handshake(&c);
            give_back(c);
        }
    }

    /// One outcome, as a log line the test reads.
    fn say(what: &str, answer: &str) {
        let _ = writeln!(std::io::stderr(), "info: hostile: {what}: {answer}");
    }

    /// Sends `bytes` as one frame without waiting, with `sendmsg` (the
    /// one send call every role's filter allows).
    fn send_frame(fd: &impl AsFd, bytes: &[u8]) -> nix::Result<usize> {
        let iov = [std::io::IoSlice::new(bytes)];
        sendmsg::<()>(
            fd.as_fd().as_raw_fd(),
            &iov,
            &[],
            MsgFlags::MSG_DONTWAIT,
            None,
        )
    }

    /// A frame of `len` bytes of garbage on a channel's socket.
    fn raw_frame(fd: &impl AsFd, len: usize) -> String {
        match send_frame(fd, &vec![0xa5u8; len]) {
            Ok(n) => format!("sent {n} bytes"),
            Err(e) => format!("refused by the kernel: {e}"),
        }
    }

    /// As the transport, to the handshake role and the parent.
    fn transport(
        parent: &Channel<TransportToParent, ParentToTransport>,
        handshake: &Channel<TransportToHandshake, HandshakeToTransport>,
    ) {
        // Forged handshake packets at a high rate: initiation-sized, from
        // addresses no peer has, MAC1 invalid. Without waiting: a full
        // queue drops the rest.
        let started = Instant::now();
        let (mut sent, mut full) = (0u32, 0u32);
        for i in 0..100_000u32 {
            let mut bytes = vec![0u8; proto::wire::INITIATION_LEN];
            bytes[0] = 1;
            bytes[4..8].copy_from_slice(&i.to_le_bytes());
            let from = proto::ipc::Endpoint::new(std::net::SocketAddr::from((
                [192, 0, 2, (i % 250) as u8 + 1],
                (i % 60_000) as u16 + 1024,
            )));
            let frame = match proto::codec::encode(&TransportToHandshake::HandshakePacket {
                bytes,
                from,
            }) {
                Ok(f) => f,
                Err(_) => break,
            };
            match send_frame(handshake, &frame) {
                Ok(_) => sent += 1,
                Err(nix::errno::Errno::EAGAIN) => {
                    // Wait (bounded) for room, with the poll every role
                    // may call.
                    full += 1;
                    let mut fds = [nix::poll::PollFd::new(
                        handshake.as_fd(),
                        nix::poll::PollFlags::POLLOUT,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(10u8));
                }
                Err(_) => break,
            }
            if started.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        say(
            "forged handshake packets to the handshake role",
            &format!(
                "{sent} sent, {full} found the queue full, in {:?}",
                started.elapsed()
            ),
        );
        // To the parent: a reply to a request it never made, garbage, an
        // oversized frame and a frame carrying a descriptor.
        let unsolicited = match proto::codec::encode(&(0x7777u64, &TransportToParent::Done)) {
            Ok(frame) => match send_frame(parent, &frame) {
                Ok(n) => format!("sent {n} bytes"),
                Err(e) => format!("refused by the kernel: {e}"),
            },
            Err(e) => format!("not encoded: {e}"),
        };
        say("unsolicited reply to the parent", &unsolicited);
        say("garbage frame to the parent", &raw_frame(parent, 100));
        say(
            "oversized frame to the parent",
            &raw_frame(parent, proto::codec::MAX_MESSAGE + 4096),
        );
        let fds = [parent.as_fd().as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"\x00\x01")];
        let r = sendmsg::<()>(
            parent.as_fd().as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_DONTWAIT,
            None,
        );
        say("frame with a descriptor to the parent", &format!("{r:?}"));
    }

    /// As the handshake role, to the key holder. `WGD_TEST_HOSTILE_PEER`
    /// (base64) names a configured peer.
    fn handshake(crypto: &Channel<HandshakeToCrypto, CryptoToHandshake>) {
        let ask = |what: &str, q: HandshakeToCrypto| {
            let a = crypto.ask(&q);
            say(what, &format!("{a:?}"));
            a
        };
        ask(
            "initiation for an unknown peer",
            HandshakeToCrypto::CreateInitiation {
                peer: PublicKey([0x42; 32]),
            },
        )
        .ok();
        // No question names a handshake and asks for its keys: keys come
        // only with a response that authenticates (or with our answer to
        // an initiation that does). So try those with forged bytes.
        ask(
            "keys of a handshake that never was",
            HandshakeToCrypto::ConsumeResponse {
                id: HandshakeId(u64::MAX - 7),
                noise: NoiseResponse([0; proto::wire::NOISE_RESPONSE_LEN]),
            },
        )
        .ok();
        let peer = std::env::var("WGD_TEST_HOSTILE_PEER")
            .ok()
            .and_then(|k| PublicKey::from_base64(&k).ok());
        if let Some(p) = peer {
            if let Ok(CryptoToHandshake::Initiation { id, .. }) = ask(
                "initiation for the configured peer",
                HandshakeToCrypto::CreateInitiation { peer: p },
            ) {
                if let Ok(CryptoToHandshake::Initiation { noise, .. }) = ask(
                    "a second initiation for the configured peer",
                    HandshakeToCrypto::CreateInitiation { peer: p },
                ) {
                    ask(
                        "an answer to our own initiation",
                        HandshakeToCrypto::AnswerInitiation { noise },
                    )
                    .ok();
                }
                ask(
                    "keys of a superseded handshake",
                    HandshakeToCrypto::ConsumeResponse {
                        id,
                        noise: NoiseResponse([0x55; proto::wire::NOISE_RESPONSE_LEN]),
                    },
                )
                .ok();
                ask(
                    "abandon the superseded handshake",
                    HandshakeToCrypto::Abandon { id },
                )
                .ok();
            }
            if let Ok(CryptoToHandshake::Initiation { id, .. }) = ask(
                "a third initiation for the configured peer",
                HandshakeToCrypto::CreateInitiation { peer: p },
            ) {
                ask(
                    "keys of an unfinished handshake (a forged response)",
                    HandshakeToCrypto::ConsumeResponse {
                        id,
                        noise: NoiseResponse([0x55; proto::wire::NOISE_RESPONSE_LEN]),
                    },
                )
                .ok();
                ask("abandon it", HandshakeToCrypto::Abandon { id }).ok();
                ask(
                    "keys of the abandoned handshake",
                    HandshakeToCrypto::ConsumeResponse {
                        id,
                        noise: NoiseResponse([0x55; proto::wire::NOISE_RESPONSE_LEN]),
                    },
                )
                .ok();
            }
        }
        // A burst of 100,000 requests about handshakes that do not exist,
        // then 1,000 initiations that do not authenticate (each costs the
        // key holder a Diffie-Hellman before it can refuse).
        let burst = |what: &str, n: u32, q: &dyn Fn(u32) -> HandshakeToCrypto| {
            let started = Instant::now();
            let (mut refused, mut other) = (0u32, 0u32);
            for i in 0..n {
                match crypto.ask(&q(i)) {
                    Ok(CryptoToHandshake::Refused(_)) => refused += 1,
                    Ok(_) => other += 1,
                    Err(_) => break,
                }
            }
            say(
                what,
                &format!(
                    "{refused} refused, {other} accepted, in {:?}",
                    started.elapsed()
                ),
            );
        };
        burst(
            "burst of 100000 requests for unknown handshakes",
            100_000,
            &|i| {
                let id = HandshakeId(u64::from(i) | 1 << 60);
                if i % 2 == 0 {
                    HandshakeToCrypto::ConsumeResponse {
                        id,
                        noise: NoiseResponse([0; proto::wire::NOISE_RESPONSE_LEN]),
                    }
                } else {
                    HandshakeToCrypto::Abandon { id }
                }
            },
        );
        burst("burst of 1000 forged initiations", 1_000, &|i| {
            let mut noise = [0u8; proto::wire::NOISE_INITIATION_LEN];
            noise[..4].copy_from_slice(&i.to_le_bytes());
            HandshakeToCrypto::AnswerInitiation {
                noise: NoiseInitiation(noise),
            }
        });
        // Last: an oversized frame, which ends the key holder's loop (a
        // channel that misbehaves is hostile); the parent restarts the
        // roles.
        say(
            "oversized frame to crypto",
            &raw_frame(crypto, proto::codec::MAX_MESSAGE + 4096),
        );
    }

    /// As the key holder, before its loop: answer the parent's first
    /// private key with a public key that is not its own (and no wrapped
    /// key), then serve as usual. The parent, which knows the public key
    /// of a key it was given, must not believe it.
    pub fn crypto(parent: &Channel<CryptoToParent, ParentToCrypto>) {
        loop {
            let Ok((to, msg)) = parent.recv_request() else {
                return;
            };
            let lie = matches!(msg, ParentToCrypto::SetPrivateKey(Some(_)));
            let reply = if lie {
                CryptoToParent::PublicKey(Some(PublicKey([0x42; 32])), None)
            } else {
                CryptoToParent::Done
            };
            let sent = parent.reply(to, &reply);
            if lie {
                say("a false public key to the parent", &format!("{sent:?}"));
                return;
            }
            if sent.is_err() {
                return;
            }
        }
    }
}
