//! Going to the background as wireguard-go does: fork, let the original
//! process wait for the daemon's word that start-up finished (so its exit
//! status tells whether the interface is up), and let go of the caller's
//! terminal and descriptors. Used by the parent before anything else
//! starts.

use std::io::Write;
use std::os::fd::AsRawFd;

/// Forks into the background. The original process waits until the
/// daemon reports that start-up finished (or why it failed) and exits
/// accordingly, so `wgd wg0 && ip link set wg0 up` works.
pub(crate) fn daemonize() -> Result<Option<std::fs::File>, String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no threads exist yet at this point of start-up.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut msg);
            if msg == "ok" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "daemon exited during start-up".into();
            }
            say!("wgd: {msg}");
            std::process::exit(1);
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            detach_from_caller(w.as_raw_fd());
            Ok(Some(std::fs::File::from(w)))
        }
    }
}

/// The daemon lets go of whatever its caller gave it, as wireguard-go's
/// does: standard input, and standard output and error unless `LOG_LEVEL`
/// asks for logs, become /dev/null, and every other inherited descriptor
/// but the start-up pipe is closed. Otherwise `out=$(wg-quick up wg0)`
/// would wait for the daemon to exit.
fn detach_from_caller(keep: i32) {
    let keep_logs = std::env::var("LOG_LEVEL").is_ok_and(|l| l != "silent" && l != "off");
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let targets: &[i32] = if keep_logs { &[0] } else { &[0, 1, 2] };
        for &fd in targets {
            // SAFETY: dup2 onto a standard descriptor of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: plain close_range(2) calls on descriptor numbers; nothing
    // in this single-threaded process holds the closed ones.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

pub(crate) fn report_ready(pipe: &mut Option<std::fs::File>, msg: &str) {
    if let Some(mut p) = pipe.take() {
        let _ = p.write_all(msg.as_bytes());
    }
}
