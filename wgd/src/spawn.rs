//! Re-executing this binary as one role (see [`crate::roles`] for the
//! table and the child's side): the channels placed at descriptors 3..,
//! every other descriptor closed on exec, a cleared environment, signals
//! unblocked, a session of its own with no controlling terminal, standard
//! input and output on /dev/null and standard error on a pipe the parent
//! reads (so no role ever holds the administrator's terminal, or a log
//! file). Used by the parent at start-up and when it restarts the roles.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::SigSet;

use crate::privdrop;
use crate::roles::FIRST_CHANNEL_FD;

/// A running role and its name, for supervision. The parent reaps it
/// itself with `waitpid(2)` (to see it stop, not only end), so it keeps
/// the pid and whether it was reaped, never signalling a reaped pid.
pub(crate) struct Spawned {
    pub(crate) name: &'static str,
    pub(crate) pid: nix::unistd::Pid,
    pub(crate) reaped: bool,
}

/// Most channels a role is given (each role has two today).
const MAX_ROLE_CHANNELS: usize = 4;

/// Re-executes this binary as one role, with its channels at fds 3..,
/// `stderr` (the write end of its log pipe) as standard error and all
/// signals unblocked. `test_hooks` passes `WGD_TEST_HOOKS` on (test builds).
pub(crate) fn spawn_role(
    name: &'static str,
    channels: &[OwnedFd],
    id: &privdrop::Identity,
    root: &std::path::Path,
    stderr: OwnedFd,
    test_hooks: Option<&str>,
) -> std::io::Result<Child> {
    // The child side of fork must not allocate (another thread of the
    // parent may have held the allocator's lock at the fork), so the
    // descriptors are laid out in fixed arrays here, before the fork.
    let mut raw = [-1i32; MAX_ROLE_CHANNELS];
    if channels.len() > raw.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (slot, c) in raw.iter_mut().zip(channels) {
        *slot = c.as_raw_fd();
    }
    let count = channels.len();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--role")
        .arg(name)
        .arg("--uid")
        .arg(id.uid.to_string())
        .arg("--gid")
        .arg(id.gid.to_string())
        .arg("--user")
        .arg(&id.name)
        .arg("--root")
        .arg(root)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    for var in [
        "LOG_LEVEL",
        "WGD_TEST_REKEY_AFTER_SECS",
        "WGD_TRANSPORT_WORKERS",
    ] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    if let Some(hooks) = test_hooks {
        cmd.env("WGD_TEST_HOOKS", hooks);
        if let Ok(v) = std::env::var("WGD_TEST_HOSTILE_PEER") {
            cmd.env("WGD_TEST_HOSTILE_PEER", v);
        }
    }
    // SAFETY: the closure runs in the forked child before exec. It
    // allocates nothing (fixed arrays; `last_os_error` and
    // `from_raw_os_error` build an error without a heap value) and calls
    // only setsid, fcntl, dup2, close_range and pthread_sigmask, which are
    // async-signal-safe system-call wrappers.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own, and so no controlling terminal: a
            // compromised role cannot reach the administrator's terminal
            // (TIOCSTI, job-control signals), and its stdio is not that
            // terminal either (set up above).
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Move every channel out of the 3.. range first, so that
            // placing one cannot clobber another still to be placed.
            // The temporary copies are close-on-exec, so only the final
            // ones at 3.. survive the exec.
            let mut high = [-1i32; MAX_ROLE_CHANNELS];
            for (h, &fd) in high.iter_mut().zip(&raw[..count]) {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &h) in high[..count].iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(h, FIRST_CHANNEL_FD + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Whatever else this process inherited from whoever started
            // wgd (a descriptor left open on a key file, say) must not
            // reach an unprivileged role: mark every other descriptor
            // close-on-exec.
            let first_free = FIRST_CHANNEL_FD as libc::c_uint + count as libc::c_uint;
            let r = libc::syscall(
                libc::SYS_close_range,
                first_free,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let empty = SigSet::empty();
            empty
                .thread_set_mask()
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            Ok(())
        });
    }
    cmd.spawn()
}
