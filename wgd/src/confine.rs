//! What the kernel holds each process to once it has dropped privilege:
//! a seccomp allowlist, resource limits and a process name. The lists
//! themselves live beside each role's entry in [`crate::roles`] (and the
//! parent's beside it), one line per system call with its reason; this
//! module only turns a list into a BPF program and installs it.
//!
//! A call outside the list kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`): the parent sees the role end with
//! `SIGSYS` and logs "seccomp". Filters stack: a role re-executed by a
//! parent that already has its filter runs under both, so the parent's
//! list also holds what a role does between `fork(2)` and its own filter
//! (loading the binary, the privilege drop).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// How one argument of a call must compare for the call to be allowed.
#[derive(Debug, Clone, Copy)]
pub enum ArgOp {
    /// Equal to the value.
    Eq(u64),
    /// `(arg & mask) == value`.
    MaskedEq { mask: u64, value: u64 },
    /// Less than or equal to the value.
    Le(u64),
}

/// A condition on argument `index` (0-based) of a call.
#[derive(Debug, Clone, Copy)]
pub struct Arg {
    pub index: u8,
    pub op: ArgOp,
}

/// One allowed system call, or one allowed form of it: entries for the
/// same call are alternatives, the conditions of one entry must all hold.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    pub nr: libc::c_long,
    /// Why the process needs it (documentation, and the `--explain`-style
    /// listing in `wgd(8)`).
    pub why: &'static str,
    pub args: &'static [Arg],
}

/// `Allow` for a call with any arguments.
pub const fn any(nr: libc::c_long, why: &'static str) -> Allow {
    Allow { nr, why, args: &[] }
}

/// `Allow` for a call whose arguments match `args`.
pub const fn only(nr: libc::c_long, why: &'static str, args: &'static [Arg]) -> Allow {
    Allow { nr, why, args }
}

/// Argument `index` equal to `value`.
pub const fn eq(index: u8, value: u64) -> Arg {
    Arg {
        index,
        op: ArgOp::Eq(value),
    }
}

/// Argument `index` with the bits of `mask` equal to `value`.
pub const fn masked(index: u8, mask: u64, value: u64) -> Arg {
    Arg {
        index,
        op: ArgOp::MaskedEq { mask, value },
    }
}

/// Argument `index` at most `value`.
pub const fn le(index: u8, value: u64) -> Arg {
    Arg {
        index,
        op: ArgOp::Le(value),
    }
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
#[cfg(target_arch = "riscv64")]
const ARCH: TargetArch = TargetArch::riscv64;

/// The BPF program for `lists` (concatenated): allow what they name, kill
/// the process on anything else.
pub fn compile(lists: &[&[Allow]]) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // A call allowed with any arguments by one entry must not be narrowed
    // by another: seccompiler treats an empty rule list as "any".
    let mut unconditional = std::collections::BTreeSet::new();
    for a in lists.iter().flat_map(|l| l.iter()) {
        #[allow(clippy::useless_conversion)] // c_long is i64 on the 64-bit targets
        let nr = i64::from(a.nr);
        if a.args.is_empty() {
            unconditional.insert(nr);
            rules.insert(nr, Vec::new());
            continue;
        }
        if unconditional.contains(&nr) {
            continue;
        }
        let conds = a
            .args
            .iter()
            .map(|arg| {
                let (op, value) = match arg.op {
                    ArgOp::Eq(v) => (SeccompCmpOp::Eq, v),
                    ArgOp::MaskedEq { mask, value } => (SeccompCmpOp::MaskedEq(mask), value),
                    ArgOp::Le(v) => (SeccompCmpOp::Le, v),
                };
                // Every argument filtered here is an `int` (or an `unsigned
                // int` such as an ioctl request): the kernel reads only its
                // low 32 bits, and so does the filter.
                SeccompCondition::new(arg.index, SeccompCmpArgLen::Dword, op, value)
                    .map_err(|e| format!("syscall {nr}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rule = SeccompRule::new(conds).map_err(|e| format!("syscall {nr}: {e}"))?;
        rules.entry(nr).or_default().push(rule);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        ARCH,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Installs the filter for `lists` on every thread of a role
/// (`SECCOMP_FILTER_FLAG_TSYNC`), after setting `no_new_privs`: the
/// privilege drop ran single-threaded (it checks), but the transport then
/// starts its workers (`wg_transport::pool`), which the filter must bind
/// as well as the thread that installs it. The kernel refuses the whole
/// filter if any thread cannot take it.
pub fn install(lists: &[&[Allow]]) -> Result<(), String> {
    let prog = compile(lists)?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| format!("seccomp: {e}"))
}

/// Installs the filter for `lists` on every thread of the process (the
/// parent, whose log relays already run), without setting
/// `no_new_privs`: the parent re-executes roles as root when it restarts
/// them, and under `no_new_privs` their `execve(2)` would not give them
/// the capabilities of the parent's bounding set they need for their own
/// drop. Without `no_new_privs` the kernel demands `CAP_SYS_ADMIN`, so
/// this runs before [`crate::privdrop::restrict_parent`].
pub fn install_parent(lists: &[&[Allow]]) -> Result<(), String> {
    let prog = compile(lists)?;
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| "filter too long".to_string())?,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // The two `sock_filter` types are the same C struct.
    // SAFETY: seccomp(2) copies the program, which `prog` keeps alive and
    // `fprog` describes, before it returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    match r {
        0 => Ok(()),
        r if r > 0 => Err(format!("seccomp: thread {r} could not take the filter")),
        _ => Err(format!("seccomp: {}", std::io::Error::last_os_error())),
    }
}

/// The resource limits of a role: no new process (`RLIMIT_NPROC` 0: the
/// uid is the role's own, so 0 means none at all), no core file, no file
/// written beyond 0 bytes, and descriptors only up to `nofile` (the
/// highest number a role may hold is `nofile - 1`).
pub fn set_role_limits(nofile: u64, memlock: Option<u64>) -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let mut limits = vec![
        (Resource::RLIMIT_NPROC, 0, "RLIMIT_NPROC"),
        (Resource::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        (Resource::RLIMIT_FSIZE, 0, "RLIMIT_FSIZE"),
        (Resource::RLIMIT_NOFILE, nofile, "RLIMIT_NOFILE"),
        // No role may raise its own scheduling priority: only the parent
        // (CAP_SYS_NICE) sets the transport's SCHED_RR, and without that
        // capability this limit is what would allow a real-time policy.
        (Resource::RLIMIT_RTPRIO, 0, "RLIMIT_RTPRIO"),
    ];
    if let Some(m) = memlock {
        limits.push((Resource::RLIMIT_MEMLOCK, m, "RLIMIT_MEMLOCK"));
    }
    for (res, v, name) in limits {
        setrlimit(res, v, v).map_err(|e| format!("setrlimit({name}, {v}): {e}"))?;
    }
    Ok(())
}

/// Names the process `wgd-ROLE` (its `comm`, as `ps` and the kernel's
/// seccomp audit lines show it).
pub fn name_process(role: &str) {
    let name = format!("wgd-{role}");
    if let Ok(c) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// Keeps every mapping of this process, present and future, out of any
/// core dump: `coredump_filter` 0 is `MADV_DONTDUMP` on all of its memory,
/// including the heap pages that later hold keys. A role is already not
/// dumpable and has `RLIMIT_CORE` 0, but a core-dump pipe handler with
/// `fs.suid_dumpable=2` (systemd-coredump) ignores both; it honours this.
/// Called by each role before its chroot (the file is in `/proc`).
pub fn exclude_from_core_dumps() -> std::io::Result<()> {
    std::fs::write("/proc/self/coredump_filter", "0\n")
}

/// Whether `status` is a death by the kernel's seccomp filter.
pub fn killed_by_seccomp(signal: i32) -> bool {
    signal == libc::SIGSYS
}

// ------------------------------------------------------------ test hook --

/// Test builds only (`--features test-hooks`, and only when the parent was
/// started with `WGD_TEST_HOOKS=1`): `SIGUSR2` makes the role attempt the
/// one system call its filter exists to refuse — `socket(2)` in crypto,
/// `fork(2)` in transport, `openat(2)` in handshake — so the end-to-end
/// tests can watch the kernel kill it and the parent recover. With
/// `WGD_TEST_HOOKS=tiocsti`, every role instead tries `ioctl(TIOCSTI)` on
/// its standard descriptors, as a role that means to type into root's
/// shell would.
#[cfg(feature = "test-hooks")]
pub mod test_hook {
    use std::sync::atomic::{AtomicU8, Ordering};

    static WHAT: AtomicU8 = AtomicU8::new(0);

    extern "C" fn on_sigusr2(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO
        // handler; a SIGUSR2 from sigqueue(3) carries our value in it.
        if let Some(info) = unsafe { info.as_ref() } {
            if info.si_code == libc::SI_QUEUE {
                let value = unsafe { info.si_value() }.sival_ptr as u64;
                crate::hostile::syscall_attack(
                    (value >> 32) as u32,
                    (value & 0xffff_ffff) as libc::pid_t,
                );
                return;
            }
        }
        // SAFETY: raw system calls with constant arguments; each is
        // expected to be fatal under the role's filter. Async-signal-safe.
        unsafe {
            match WHAT.load(Ordering::Relaxed) {
                1 => {
                    libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0);
                }
                2 => {
                    #[cfg(target_arch = "x86_64")]
                    libc::syscall(libc::SYS_fork);
                    #[cfg(not(target_arch = "x86_64"))]
                    libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
                }
                3 => {
                    libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        c"/etc/passwd".as_ptr(),
                        libc::O_RDONLY,
                    );
                }
                4 => {
                    // What a compromised role would try on a terminal it
                    // inherited: push a byte into its input queue.
                    let c: libc::c_char = b'x' as libc::c_char;
                    for fd in 0..3 {
                        libc::syscall(
                            libc::SYS_ioctl,
                            fd,
                            libc::TIOCSTI,
                            &c as *const libc::c_char,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// Arms the hook for `role` if the parent asked for test hooks.
    pub fn arm(role: &str) {
        let what = match (std::env::var("WGD_TEST_HOOKS").as_deref(), role) {
            (Ok("1"), "crypto") => 1,
            (Ok("1"), "transport") => 2,
            (Ok("1"), "handshake") => 3,
            // Every role: ioctl(TIOCSTI) on its standard descriptors.
            (Ok("tiocsti"), _) => 4,
            // A hostile role (crate::hostile): only sigqueue'd attacks.
            (Ok(v), _) if v.starts_with("hostile:") => 0,
            _ => return,
        };
        WHAT.store(what, Ordering::Relaxed);
        // SAFETY: installs a handler that only makes raw system calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigusr2 as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
        }
        tracing::warn!("test hook armed: SIGUSR2 makes this role break its seccomp filter");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_lists_with_and_without_arguments() {
        const A: &[Allow] = &[
            any(libc::SYS_read, "r"),
            only(libc::SYS_socket, "s", &[eq(0, libc::AF_UNIX as u64)]),
            only(libc::SYS_socket, "s2", &[eq(0, libc::AF_INET as u64)]),
            only(libc::SYS_write, "narrowed but also any", &[eq(0, 2)]),
        ];
        const B: &[Allow] = &[any(libc::SYS_write, "w")];
        let prog = compile(&[A, B]).expect("compiles");
        assert!(!prog.is_empty());
    }
}
