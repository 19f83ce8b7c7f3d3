//! The one place where wgd gives up privilege.
//!
//! wgd's parent is started as root. It opens everything that needs
//! privilege (tun device, UDP sockets, control socket), then re-executes its
//! own binary once per role (transport, handshake, crypto). Every child, and
//! later the parent itself, sheds privilege through this module and nowhere
//! else, so that the whole privilege story of the daemon can be audited by
//! reading one file.
//!
//! # Who calls what
//!
//! | caller | when | calls |
//! | --- | --- | --- |
//! | parent | at start-up, as root | [`resolve_users`], [`empty_root`] |
//! | crypto child | first thing after exec, still root | [`lock_memory`] (raises `RLIMIT_MEMLOCK`; failure is a warning) |
//! | every child | after it has taken over its fds, before reading any input | [`drop_child_privileges`] |
//! | parent | after all three children have been spawned | [`restrict_parent`] |
//!
//! The children end up with their role's uid and primary gid (no
//! supplementary groups), chrooted in an empty root-owned directory, with
//! every capability set empty (effective, permitted, inheritable, ambient and
//! bounding), `no_new_privs` set and not dumpable. Each role runs under a
//! uid of its own (`_wgd-net`, `_wgd-hs`, `_wgd-crypto`): processes of the
//! same uid may `ptrace(2)`, `kill(2)`, stop and `prlimit(2)` each other,
//! and the transport and handshake roles parse network input while crypto
//! holds the static key. After the drop each role also gets its resource
//! limits and its seccomp filter ([`crate::confine`]).
//!
//! # What the parent keeps
//!
//! The parent stays uid 0 (so that it still owns what it created as root,
//! such as the control socket it unlinks on exit) but keeps only these
//! capabilities in its effective and permitted sets:
//!
//! | privilege | why it is kept |
//! | --- | --- |
//! | `CAP_NET_ADMIN` | configure the tun device's link state, set `SO_MARK` (fwmark) on the UDP sockets when `fwmark` changes, and delete the interface when failing closed |
//! | `CAP_NET_BIND_SERVICE` | re-bind the UDP socket when `wg set listen-port` moves it to a port below 1024 |
//! | `CAP_KILL` | end a role that is stopped or does not exit when its channels are hung up, before restarting the roles (they run under other uids) |
//! | `CAP_SYS_NICE` | put the transport (another uid) under `SCHED_RR` while it is busy and back to normal priority ([`crate::sched`]) |
//! | uid 0 (no capability) | remove the root-owned control socket and open files it created as root (the configuration and key files it re-reads for a restart); it gives no power over other users' files without `CAP_DAC_OVERRIDE` |
//!
//! Its bounding set keeps, beside those four, what a freshly re-executed
//! role needs until its own drop ([`RESPAWN_CAPS`]: `CAP_SETUID`,
//! `CAP_SETGID`, `CAP_SYS_CHROOT`, `CAP_SETPCAP`, `CAP_IPC_LOCK`): a root
//! process's `execve(2)` gets its bounding set as its permitted set, and
//! that is how the parent restarts the roles after one dies without holding
//! those capabilities itself. The parent is made non-dumpable because
//! secrets pass through it on their way to crypto.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::sys::mman::{mlockall, munlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use nix::unistd::{self, Gid, Group, Uid, User};

/// Default user of the transport role.
pub const DEFAULT_USER: &str = "_wgd-net";

/// Default user of the handshake role.
pub const DEFAULT_HANDSHAKE_USER: &str = "_wgd-hs";

/// Default user of the crypto role.
pub const DEFAULT_CRYPTO_USER: &str = "_wgd-crypto";

/// Where children are chrooted. Under `/run` so that it lives on a tmpfs,
/// is recreated at every boot and never accumulates anything on disk.
pub const EMPTY_ROOT: &str = "/run/wgd/empty";

/// The commands that create wgd's default users, for the README and for
/// error messages.
pub const CREATE_USERS_HINT: &str = concat!(
    "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin _wgd-net\n",
    "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin _wgd-hs\n",
    "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin _wgd-crypto\n",
);

/// With `allow_nobody`, the handshake and crypto roles fall back to the
/// first of these ids (searched downwards from 65533, just below Debian's
/// `nobody`) that have neither a passwd nor a group entry, one each.
const FALLBACK_ID_RANGE: std::ops::RangeInclusive<u32> = 65000..=65533;

/// What [`lock_memory`] raises the crypto role's `RLIMIT_MEMLOCK` to.
///
/// With `MCL_FUTURE`, every later mapping counts against this limit once the
/// process has lost `CAP_IPC_LOCK`; beyond it `mmap(2)` and `brk(2)` fail
/// and the process dies of an allocation failure (which the parent treats
/// as a dead role and fails closed). The crypto role needs a few MiB; the
/// margin covers glibc's per-thread arena reservations, which count
/// although they are never touched. Keep the crypto role single-threaded.
pub const CRYPTO_MEMLOCK_LIMIT: u64 = 256 << 20;

/// How much of `RLIMIT_MEMLOCK` [`lock_memory`] insists stays free for
/// allocations after the lock.
pub const MEMLOCK_HEADROOM: u64 = 64 << 20;

/// The parent's effective and permitted capabilities (see the module
/// documentation).
const KEPT_PARENT_CAPS: [Capability; 4] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_KILL,
    Capability::CAP_SYS_NICE,
];

/// Kept in the parent's bounding set only, for the roles it re-executes:
/// each needs these until [`drop_child_privileges`] (and crypto
/// `CAP_IPC_LOCK` for [`lock_memory`]), and drops them there.
pub const RESPAWN_CAPS: [Capability; 5] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SETPCAP,
    Capability::CAP_IPC_LOCK,
];

/// A user that a role runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The passwd name, or `#<uid>` for the crypto fallback that has no entry.
    pub name: String,
    pub uid: Uid,
    /// The primary group; children keep no supplementary groups.
    pub gid: Gid,
}

/// The identities of the unprivileged roles: three different uids, so
/// that no role can signal, stop, trace or `prlimit(2)` another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleUsers {
    pub transport: Identity,
    pub handshake: Identity,
    pub crypto: Identity,
}

/// Why privilege could not be set up or dropped. Every variant is fatal for
/// the process that hits it, except from [`lock_memory`].
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("user(s) {names} do not exist; create them with:\n{commands}(or allow the fallback to `nobody` for testing)")]
    MissingUsers { names: String, commands: String },
    #[error("cannot look up {what}: {source}")]
    Lookup {
        what: String,
        #[source]
        source: Errno,
    },
    #[error("{role} user {name:?} has uid {uid} / gid {gid}: a role must not run as root or in group root")]
    RootIdentity {
        role: &'static str,
        name: String,
        uid: Uid,
        gid: Gid,
    },
    #[error("{a} user {a_name:?} and {b} user {b_name:?} share uid {uid}: each role needs a uid of its own so that no role can trace, stop or signal another")]
    SameUid {
        a: &'static str,
        a_name: String,
        b: &'static str,
        b_name: String,
        uid: Uid,
    },
    #[error(
        "no unused uid/gid in {FALLBACK_ID_RANGE:?} for the {0} role; create its user instead"
    )]
    NoFallbackId(&'static str),
    #[error("memory not locked: {0}")]
    Memlock(String),
    #[error("empty root {path}: {reason}")]
    EmptyRoot { path: PathBuf, reason: String },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("{step}: {source}")]
    Caps {
        step: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("privilege drop did not take effect: {0}")]
    Verify(String),
}

fn sys(step: &'static str) -> impl FnOnce(Errno) -> PrivError {
    move |source| PrivError::Sys { step, source }
}

fn capserr(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivError {
    move |source| PrivError::Caps { step, source }
}

/// The `useradd(8)` command that creates `name` the way wgd expects: a
/// system user with its own group, no home and no login shell.
pub fn create_user_command(name: &str) -> String {
    let safe = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    let quoted = if safe {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', r"'\''"))
    };
    format!(
        "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {quoted}"
    )
}

fn lookup_user(name: &str) -> Result<Option<Identity>, PrivError> {
    let user = User::from_name(name).map_err(|source| PrivError::Lookup {
        what: format!("user {name:?}"),
        source,
    })?;
    Ok(user.map(|u| Identity {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
    }))
}

/// An id for a role that no account uses, so that sharing it gives
/// nothing away, and that none of `taken` uses. Ids are probed in a fixed
/// order so that the choice is stable across restarts.
fn fallback_identity(role: &'static str, taken: &[&Identity]) -> Result<Identity, PrivError> {
    for raw in FALLBACK_ID_RANGE.rev() {
        if taken
            .iter()
            .any(|t| raw == t.uid.as_raw() || raw == t.gid.as_raw())
        {
            continue;
        }
        let uid = Uid::from_raw(raw);
        let gid = Gid::from_raw(raw);
        let user = User::from_uid(uid).map_err(|source| PrivError::Lookup {
            what: format!("uid {raw}"),
            source,
        })?;
        let group = Group::from_gid(gid).map_err(|source| PrivError::Lookup {
            what: format!("gid {raw}"),
            source,
        })?;
        if user.is_none() && group.is_none() {
            return Ok(Identity {
                name: format!("#{raw}"),
                uid,
                gid,
            });
        }
    }
    Err(PrivError::NoFallbackId(role))
}

fn refuse_root(role: &'static str, id: &Identity) -> Result<(), PrivError> {
    if id.uid.is_root() || id.gid.as_raw() == 0 {
        return Err(PrivError::RootIdentity {
            role,
            name: id.name.clone(),
            uid: id.uid,
            gid: id.gid,
        });
    }
    Ok(())
}

/// Resolve the users the roles run as.
///
/// `user` (default [`DEFAULT_USER`]) runs transport, `handshake_user`
/// (default [`DEFAULT_HANDSHAKE_USER`]) handshake and `crypto_user`
/// (default [`DEFAULT_CRYPTO_USER`]) crypto. A missing user is an error
/// whose message holds the `useradd` command creating it.
///
/// With `allow_nobody` (meant for tests and quick trials, not production),
/// a missing `user` falls back to `nobody`, and a missing handshake or
/// crypto user to a uid/gid pair that has no passwd or group entry,
/// searched downwards from 65533 and never equal to another role's uid or
/// gid. `nobody` is shared with other daemons (and NFS squashing), which is
/// why this is not the default.
///
/// Any role resolving to uid 0 or gid 0, or two roles resolving to the same
/// uid, is an error.
pub fn resolve_users(
    user: Option<&str>,
    handshake_user: Option<&str>,
    crypto_user: Option<&str>,
    allow_nobody: bool,
) -> Result<RoleUsers, PrivError> {
    let names = [
        user.unwrap_or(DEFAULT_USER),
        handshake_user.unwrap_or(DEFAULT_HANDSHAKE_USER),
        crypto_user.unwrap_or(DEFAULT_CRYPTO_USER),
    ];
    let found = [
        lookup_user(names[0])?,
        lookup_user(names[1])?,
        lookup_user(names[2])?,
    ];

    if !allow_nobody && found.iter().any(Option::is_none) {
        let missing: Vec<&str> = names
            .iter()
            .zip(&found)
            .filter(|(_, id)| id.is_none())
            .map(|(name, _)| *name)
            .collect();
        let mut commands = String::new();
        for name in &missing {
            let _ = writeln!(commands, "    {}", create_user_command(name));
        }
        return Err(PrivError::MissingUsers {
            names: missing.join(", "),
            commands,
        });
    }

    let [transport, handshake, crypto] = found;
    let transport = match transport {
        Some(id) => id,
        None => lookup_user("nobody")?.ok_or_else(|| PrivError::MissingUsers {
            names: format!("{}, nobody", names[0]),
            commands: format!("    {}\n", create_user_command(names[0])),
        })?,
    };
    // The fallback ids avoid every id a named user has, so that a
    // fallback never shares a uid with a real role user.
    let named: Vec<Identity> = [&handshake, &crypto]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let mut taken: Vec<&Identity> = named.iter().collect();
    taken.push(&transport);
    let handshake = match handshake {
        Some(id) => id,
        None => fallback_identity("handshake", &taken)?,
    };
    let mut taken: Vec<&Identity> = named.iter().collect();
    taken.extend([&transport, &handshake]);
    let crypto = match crypto {
        Some(id) => id,
        None => fallback_identity("crypto", &taken)?,
    };

    refuse_root("transport", &transport)?;
    refuse_root("handshake", &handshake)?;
    refuse_root("crypto", &crypto)?;
    let roles = [
        ("transport", &transport),
        ("handshake", &handshake),
        ("crypto", &crypto),
    ];
    for (i, (a, a_id)) in roles.iter().enumerate() {
        for (b, b_id) in &roles[i + 1..] {
            if a_id.uid == b_id.uid {
                return Err(PrivError::SameUid {
                    a,
                    a_name: a_id.name.clone(),
                    b,
                    b_name: b_id.name.clone(),
                    uid: a_id.uid,
                });
            }
        }
    }
    Ok(RoleUsers {
        transport,
        handshake,
        crypto,
    })
}

/// Prepare [`EMPTY_ROOT`] and return its path; see [`empty_root_at`].
pub fn empty_root() -> Result<PathBuf, PrivError> {
    empty_root_at(Path::new(EMPTY_ROOT))
}

/// Create (if missing, mode 0755, owned by root) and vet the directory
/// children are chrooted into.
///
/// The path and every ancestor must be real directories (no symlinks),
/// owned by root and writable by no one else: otherwise another user could
/// swap or fill the directory between this check and the children's
/// `chroot(2)`. The directory itself must be empty, so that a chrooted child
/// finds nothing to open, execute or write.
pub fn empty_root_at(path: &Path) -> Result<PathBuf, PrivError> {
    let refuse = |at: &Path, reason: String| PrivError::EmptyRoot {
        path: at.to_path_buf(),
        reason,
    };
    if !path.is_absolute() {
        return Err(refuse(path, "not an absolute path".into()));
    }

    let mut cur = PathBuf::from("/");
    vet_root_dir(&cur)?;
    for comp in path.components() {
        match comp {
            Component::RootDir => continue,
            Component::Normal(name) => cur.push(name),
            _ => return Err(refuse(path, "contains `.` or `..`".into())),
        }
        match fs::symlink_metadata(&cur) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_root_dir(&cur)?,
            Err(e) => return Err(refuse(&cur, e.to_string())),
        }
        vet_root_dir(&cur)?;
    }

    let mut entries = fs::read_dir(&cur).map_err(|e| refuse(&cur, e.to_string()))?;
    if let Some(entry) = entries.next() {
        let what = match entry {
            Ok(e) => format!("contains {:?}", e.file_name()),
            Err(e) => e.to_string(),
        };
        return Err(refuse(
            &cur,
            format!("not empty ({what}); refusing to chroot into it"),
        ));
    }
    Ok(cur)
}

fn create_root_dir(dir: &Path) -> Result<(), PrivError> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            // The umask may have removed bits; 0755 lets the unprivileged
            // children see that / is a directory after the chroot.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| {
                PrivError::EmptyRoot {
                    path: dir.to_path_buf(),
                    reason: format!("chmod 0755: {e}"),
                }
            })
        }
        // Another wgd (or test) created it concurrently; it is vetted next.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(PrivError::EmptyRoot {
            path: dir.to_path_buf(),
            reason: format!("mkdir: {e}"),
        }),
    }
}

fn vet_root_dir(dir: &Path) -> Result<(), PrivError> {
    let refuse = |reason: String| PrivError::EmptyRoot {
        path: dir.to_path_buf(),
        reason,
    };
    let md = fs::symlink_metadata(dir).map_err(|e| refuse(e.to_string()))?;
    if md.file_type().is_symlink() {
        return Err(refuse("is a symlink".into()));
    }
    if !md.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    if md.uid() != 0 {
        return Err(refuse(format!("owned by uid {}, not root", md.uid())));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "mode {:04o} is writable by group or others",
            md.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Lock all current and future memory of the crypto role, so that keys are
/// never written to swap.
///
/// Called by the crypto child while still root, before
/// [`drop_child_privileges`]. Failure should be logged as a warning; the
/// role still works, only its memory may be swapped.
///
/// Once the role has dropped `CAP_IPC_LOCK`, `MCL_FUTURE` makes every new
/// mapping count against `RLIMIT_MEMLOCK`, and the usual 8 MiB default
/// would make the first sizeable allocation after the drop fail. So this
/// first raises the limit to [`CRYPTO_MEMLOCK_LIMIT`] (beyond the hard
/// limit only with `CAP_SYS_RESOURCE`; under systemd, `LimitMEMLOCK=256M`
/// does it too), and after locking checks that at least
/// [`MEMLOCK_HEADROOM`] of it is still free. If either fails, memory is left
/// unlocked and an error returned: an unlocked role is better than one that
/// dies on its next allocation.
pub fn lock_memory() -> Result<(), PrivError> {
    let limit = raise_memlock_limit()?;
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
        .map_err(sys("mlockall(MCL_CURRENT | MCL_FUTURE)"))?;
    let locked = match locked_bytes() {
        Ok(locked) => locked,
        Err(e) => {
            let _ = munlockall();
            return Err(e);
        }
    };
    if limit != RLIM_INFINITY && locked.saturating_add(MEMLOCK_HEADROOM) > limit {
        munlockall().map_err(sys("munlockall"))?;
        return Err(PrivError::Memlock(format!(
            "{} MiB locked at once leaves less than {} MiB of RLIMIT_MEMLOCK ({} MiB) \
             for later allocations; memory left unlocked",
            locked >> 20,
            MEMLOCK_HEADROOM >> 20,
            limit >> 20
        )));
    }
    Ok(())
}

/// Make the soft `RLIMIT_MEMLOCK` at least [`CRYPTO_MEMLOCK_LIMIT`] and
/// return it.
fn raise_memlock_limit() -> Result<u64, PrivError> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_MEMLOCK).map_err(sys("getrlimit(RLIMIT_MEMLOCK)"))?;
    if soft == RLIM_INFINITY || soft >= CRYPTO_MEMLOCK_LIMIT {
        return Ok(soft);
    }
    let new_hard = if hard == RLIM_INFINITY {
        hard
    } else {
        hard.max(CRYPTO_MEMLOCK_LIMIT)
    };
    match setrlimit(Resource::RLIMIT_MEMLOCK, CRYPTO_MEMLOCK_LIMIT, new_hard) {
        Ok(()) => Ok(CRYPTO_MEMLOCK_LIMIT),
        Err(e) => Err(PrivError::Memlock(format!(
            "cannot raise RLIMIT_MEMLOCK from {} KiB (hard {} KiB) to {} MiB: {e} \
             (needs CAP_SYS_RESOURCE, or LimitMEMLOCK= in the service unit); \
             memory left unlocked",
            soft >> 10,
            hard >> 10,
            CRYPTO_MEMLOCK_LIMIT >> 20
        ))),
    }
}

/// The process's locked memory as the kernel accounts it against
/// `RLIMIT_MEMLOCK` (`VmLck`). Read before the chroot, while /proc is
/// still reachable.
fn locked_bytes() -> Result<u64, PrivError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| PrivError::Memlock(format!("reading /proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib << 10)
        .ok_or_else(|| PrivError::Memlock("no VmLck in /proc/self/status".into()))
}

/// The number of threads in this process, from /proc (still reachable:
/// this runs before the chroot).
fn thread_count() -> Result<u64, PrivError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| PrivError::Verify(format!("reading /proc/self/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| PrivError::Verify("no Threads in /proc/self/status".into()))
}

/// Irrevocably turn the calling child into `id`, confined to `root`.
///
/// Every role calls this once, after it has taken the fds it needs and
/// before it reads any input from the network or a peer process. The
/// process must be single-threaded (capabilities and `no_new_privs` are
/// per thread; this is checked) and still root. `root` should come from [`empty_root`].
/// On error the caller must exit: the process may be half-dropped.
pub fn drop_child_privileges(id: &Identity, root: &Path) -> Result<(), PrivError> {
    refuse_root("role", id)?;

    // Capability sets, the bounding set and no_new_privs belong to a thread,
    // not the process: any other thread would keep what this one drops.
    let threads = thread_count()?;
    if threads != 1 {
        return Err(PrivError::Verify(format!(
            "{threads} threads; privileges must be dropped while single-threaded"
        )));
    }

    // chroot first, while CAP_SYS_CHROOT is still held: afterwards the
    // filesystem is an empty directory and a compromised role can open,
    // execute or create nothing by path. chdir("/") so that no working
    // directory outside the new root remains as an escape hatch.
    unistd::chroot(root).map_err(sys("chroot"))?;
    unistd::chdir("/").map_err(sys("chdir(\"/\") in the new root"))?;

    // Supplementary groups (root's, inherited from the parent) survive
    // setresgid; clear them while CAP_SETGID is still held.
    unistd::setgroups(&[]).map_err(sys("setgroups([])"))?;

    // Group before user: once the uid is not 0 CAP_SETGID is gone. All
    // three ids, so that no saved id can switch back to root's group.
    unistd::setresgid(id.gid, id.gid, id.gid).map_err(sys("setresgid"))?;

    // Emptying the bounding set needs CAP_SETPCAP, which setresuid is
    // about to take away; an empty bounding set means no later execve (of
    // anything, setuid or with file capabilities) can give capabilities back.
    bounding_set_retain(0)?;

    // All three uids, so that the saved uid cannot be used to become root
    // again. Leaving uid 0 also makes the kernel clear the permitted and
    // effective sets (unless SECBIT_KEEP_CAPS was set; they are cleared
    // explicitly below in any case).
    unistd::setresuid(id.uid, id.uid, id.uid).map_err(sys("setresuid"))?;

    // Belt and braces against execve: no setuid bit or file capability can
    // raise privilege from now on, inherited by anything this process runs.
    prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))?;

    // Not dumpable: no core file with keys or packets, and other processes
    // of the same uid (the other role sharing it) cannot ptrace this one or
    // read its /proc memory. Must come after setresuid, because a change of
    // uid resets the dumpable flag.
    prctl::set_dumpable(false).map_err(sys("prctl(PR_SET_DUMPABLE, 0)"))?;

    // Clear every capability set explicitly rather than trusting the
    // setresuid side effect, which SECBIT_KEEP_CAPS or SECBIT_NO_SETUID_FIXUP
    // would have disabled. Inheritable and ambient would otherwise carry
    // capabilities across an execve.
    caps::clear(None, CapSet::Effective).map_err(capserr("clear effective capabilities"))?;
    caps::clear(None, CapSet::Permitted).map_err(capserr("clear permitted capabilities"))?;
    caps::clear(None, CapSet::Inheritable).map_err(capserr("clear inheritable capabilities"))?;
    caps::clear(None, CapSet::Ambient).map_err(capserr("clear ambient capabilities"))?;

    verify_child(id)
}

/// Check, with the kernel's own answers, that the drop really happened: a
/// silently ignored step would otherwise leave a role with root powers.
fn verify_child(id: &Identity) -> Result<(), PrivError> {
    let fail = |what: String| Err(PrivError::Verify(what));

    let r = unistd::getresuid().map_err(sys("getresuid"))?;
    if [r.real, r.effective, r.saved] != [id.uid; 3] {
        return fail(format!(
            "uids are {}/{}/{}, expected {}",
            r.real, r.effective, r.saved, id.uid
        ));
    }
    let g = unistd::getresgid().map_err(sys("getresgid"))?;
    if [g.real, g.effective, g.saved] != [id.gid; 3] {
        return fail(format!(
            "gids are {}/{}/{}, expected {}",
            g.real, g.effective, g.saved, id.gid
        ));
    }
    let groups = unistd::getgroups().map_err(sys("getgroups"))?;
    if !groups.is_empty() {
        return fail(format!("supplementary groups remain: {groups:?}"));
    }
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return fail("setuid(0) succeeded".into());
    }
    if unistd::setgid(Gid::from_raw(0)).is_ok() {
        return fail("setgid(0) succeeded".into());
    }

    let sets = raw_capsets()?;
    if sets
        != (RawCaps {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        })
    {
        return fail(format!("capabilities remain: {sets:?}"));
    }
    let bounding = bounding_set()?;
    if bounding != 0 {
        return fail(format!("bounding set not empty: {bounding:#x}"));
    }
    let ambient = ambient_set()?;
    if ambient != 0 {
        return fail(format!("ambient set not empty: {ambient:#x}"));
    }

    if !prctl::get_no_new_privs().map_err(sys("prctl(PR_GET_NO_NEW_PRIVS)"))? {
        return fail("no_new_privs is not set".into());
    }
    if prctl::get_dumpable().map_err(sys("prctl(PR_GET_DUMPABLE)"))? {
        return fail("process is still dumpable".into());
    }
    Ok(())
}

/// Reduce the parent, which stays uid 0, to `CAP_NET_ADMIN`,
/// `CAP_NET_BIND_SERVICE`, `CAP_KILL` and `CAP_SYS_NICE` (see the module documentation for
/// why each is kept), with [`RESPAWN_CAPS`] left in its bounding set only,
/// and make it non-dumpable.
///
/// Call this after the first roles have been spawned (they start with the
/// parent's full set). Roles the parent restarts later get exactly its
/// bounding set at their `execve(2)`, which is all they need to drop
/// privileges. Before it narrows anything, this raises `RLIMIT_MEMLOCK`
/// for the children to come (see [`lock_memory`]; best effort), since a
/// restarted crypto role no longer has `CAP_SYS_RESOURCE` to do it.
pub fn restrict_parent() -> Result<(), PrivError> {
    let keep_mask = KEPT_PARENT_CAPS.iter().fold(0u64, |m, c| m | c.bitmask());
    let bound_mask = RESPAWN_CAPS.iter().fold(keep_mask, |m, c| m | c.bitmask());
    let keep: CapsHashSet = KEPT_PARENT_CAPS.into_iter().collect();
    let _ = raise_memlock_limit();

    // While CAP_SETPCAP is still effective: an execve as uid 0 would
    // otherwise get back every capability left in the bounding set.
    bounding_set_retain(bound_mask)?;

    // Nothing is meant to cross an execve implicitly.
    caps::clear(None, CapSet::Ambient).map_err(capserr("clear ambient capabilities"))?;
    caps::clear(None, CapSet::Inheritable).map_err(capserr("clear inheritable capabilities"))?;
    // Effective first: the kernel requires effective to stay a subset of
    // permitted at every step.
    caps::set(None, CapSet::Effective, &keep)
        .map_err(capserr("restrict effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(capserr("restrict permitted capabilities"))?;

    // Private keys and PSKs pass through the parent on their way to crypto
    // (its copy is zeroized at once, but it existed): no core dumps, and no
    // ptrace or /proc/PID/mem access even by other uid-0 processes lacking
    // CAP_SYS_PTRACE.
    prctl::set_dumpable(false).map_err(sys("prctl(PR_SET_DUMPABLE, 0)"))?;

    let sets = raw_capsets()?;
    let want = RawCaps {
        effective: keep_mask,
        permitted: keep_mask,
        inheritable: 0,
    };
    if sets != want {
        return Err(PrivError::Verify(format!(
            "parent capabilities are {sets:?}, expected {want:?}"
        )));
    }
    let bounding = bounding_set()?;
    if bounding != bound_mask {
        return Err(PrivError::Verify(format!(
            "parent bounding set is {bounding:#x}, expected {bound_mask:#x}"
        )));
    }
    let ambient = ambient_set()?;
    if ambient != 0 {
        return Err(PrivError::Verify(format!(
            "parent ambient set not empty: {ambient:#x}"
        )));
    }
    if prctl::get_dumpable().map_err(sys("prctl(PR_GET_DUMPABLE)"))? {
        return Err(PrivError::Verify("parent is still dumpable".into()));
    }
    Ok(())
}

// The helpers below talk to the kernel directly instead of through `caps`:
// caps 0.5 only knows the capabilities up to CAP_CHECKPOINT_RESTORE and
// masks everything else out, so on a newer kernel it would neither drop nor
// report a capability it has never heard of. A privilege drop must not miss
// any, so these walk every index the kernel accepts (prctl answers EINVAL
// past the last one) and read the raw 64-bit masks.

#[derive(Debug, PartialEq, Eq)]
struct RawCaps {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

fn raw_capsets() -> Result<RawCaps, PrivError> {
    // struct __user_cap_header_struct / __user_cap_data_struct, version 3
    // (64-bit sets split over two data structs).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget(2) with a version-3 header writes exactly two data
    // structs, which `data` provides; both pointers are valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    Errno::result(r).map_err(sys("capget"))?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(RawCaps {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// `prctl(op, arg, sub, 0, 0)` for a capability query, `None` past the last
/// capability the kernel knows.
fn cap_prctl(
    op: libc::c_int,
    arg: libc::c_ulong,
    sub: libc::c_ulong,
) -> Result<Option<bool>, Errno> {
    // SAFETY: the capability prctls used here take only integer arguments
    // and do not access memory.
    let r = unsafe { libc::prctl(op, arg, sub, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    match Errno::result(r) {
        Ok(v) => Ok(Some(v != 0)),
        Err(Errno::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

fn bounding_set() -> Result<u64, PrivError> {
    let mut mask = 0u64;
    for idx in 0..64u32 {
        let has = cap_prctl(libc::PR_CAPBSET_READ, idx.into(), 0)
            .map_err(sys("prctl(PR_CAPBSET_READ)"))?;
        match has {
            None => break,
            Some(true) => mask |= 1 << idx,
            Some(false) => {}
        }
    }
    Ok(mask)
}

fn ambient_set() -> Result<u64, PrivError> {
    let mut mask = 0u64;
    for idx in 0..64u32 {
        let has = cap_prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
            idx.into(),
        )
        .map_err(sys("prctl(PR_CAP_AMBIENT_IS_SET)"))?;
        match has {
            None => break,
            Some(true) => mask |= 1 << idx,
            Some(false) => {}
        }
    }
    Ok(mask)
}

/// Drop from the bounding set every capability not in `keep`.
fn bounding_set_retain(keep: u64) -> Result<(), PrivError> {
    let present = bounding_set()?;
    for idx in 0..64u32 {
        if present & !keep & (1 << idx) == 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes only integer arguments.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(idx),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        Errno::result(r).map_err(sys("prctl(PR_CAPBSET_DROP)"))?;
    }
    Ok(())
}
