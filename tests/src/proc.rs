//! Processes the tests start: a guard that kills and reaps by pid, and
//! bounded one-shot command execution.
//!
//! A [`Child`] owns its `std::process::Child` until it is reaped, so the pid
//! it signals is always its own (a pid is not reused before it is reaped).
//! Its stdout and stderr go to temporary files that live as long as the
//! guard, so a failing test can print them; a guard dropped while the test
//! thread panics prints them by itself.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::NamedTempFile;

use crate::error::{Error, Result};
use crate::wait::wait_until;

/// How long a child gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// Default bound on a one-shot command run with [`run_command`].
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of a child's output printed when a test fails.
const PRINT_LIMIT: usize = 16 * 1024;

enum State {
    Running(std::process::Child),
    Exited(ExitStatus),
    /// Reaping failed; the pid is no longer ours to signal.
    Lost,
}

/// State shared by a [`Child`] guard and the namespace it runs in, so that
/// whichever is dropped first kills and reaps it, and the other does nothing.
pub(crate) struct Shared {
    pid: u32,
    label: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Updates the state if the child has exited; true while it runs.
    fn poll(state: &mut State) -> bool {
        if let State::Running(child) = state {
            match child.try_wait() {
                Ok(None) => return true,
                Ok(Some(status)) => *state = State::Exited(status),
                Err(_) => *state = State::Lost,
            }
        }
        false
    }

    fn is_running(&self) -> bool {
        Self::poll(&mut self.lock())
    }

    fn status(&self) -> Option<ExitStatus> {
        let mut state = self.lock();
        Self::poll(&mut state);
        match *state {
            State::Exited(status) => Some(status),
            _ => None,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, and reap. Idempotent.
    pub(crate) fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        let mut state = self.lock();
        if Self::poll(&mut state) {
            let pid = Pid::from_raw(self.pid as i32);
            // The child is not reaped yet, so this pid is still ours.
            let _ = kill(pid, Signal::SIGTERM);
            let _ = wait_until(grace, "child to exit after SIGTERM", || {
                !Self::poll(&mut state)
            });
            if let State::Running(child) = &mut *state {
                eprintln!(
                    "wgd-tests: {} (pid {}) ignored SIGTERM for {grace:?}; sending SIGKILL",
                    self.label, self.pid
                );
                let _ = kill(pid, Signal::SIGKILL);
                *state = match child.wait() {
                    Ok(status) => State::Exited(status),
                    Err(_) => State::Lost,
                };
            }
        }
        match *state {
            State::Exited(status) => Some(status),
            _ => None,
        }
    }
}

/// A long-running process started by a test. Dropping it sends SIGTERM,
/// then SIGKILL after [`TERM_GRACE`], and reaps it.
pub struct Child {
    shared: Arc<Shared>,
    stdout: NamedTempFile,
    stderr: NamedTempFile,
}

impl Child {
    /// Starts `command` with stdin from /dev/null and stdout/stderr captured
    /// to temporary files. `label` names it in messages.
    pub fn spawn(mut command: Command, label: &str) -> Result<Child> {
        let desc = describe(&command);
        let stdout = NamedTempFile::new().map_err(|e| Error::io("stdout temp file", e))?;
        let stderr = NamedTempFile::new().map_err(|e| Error::io("stderr temp file", e))?;
        let out = stdout
            .reopen()
            .map_err(|e| Error::io("reopen stdout temp file", e))?;
        let err = stderr
            .reopen()
            .map_err(|e| Error::io("reopen stderr temp file", e))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command
            .spawn()
            .map_err(|source| Error::Spawn { cmd: desc, source })?;
        Ok(Child {
            shared: Arc::new(Shared {
                pid: child.id(),
                label: label.to_string(),
                state: Mutex::new(State::Running(child)),
            }),
            stdout,
            stderr,
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The process id (of the command itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        self.shared.is_running()
    }

    /// The exit status, once it has exited (or been stopped).
    pub fn status(&self) -> Option<ExitStatus> {
        self.shared.status()
    }

    /// Stops it now (SIGTERM, then SIGKILL after `grace`) and reaps it.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.shared.terminate(grace)
    }

    /// Waits up to `timeout` for it to exit by itself; does not signal it.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let what = format!("{} (pid {}) to exit", self.label(), self.pid());
        wait_until(timeout, &what, || !self.is_running())?;
        self.status()
            .ok_or_else(|| Error::other(format!("{what}: exit status lost")))
    }

    /// Everything it has written to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(self.stderr.path())
    }

    /// Everything it has written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(self.stdout.path())
    }

    /// A report of its state and output, for failure messages.
    pub fn report(&self) -> String {
        let state = match self.status() {
            Some(status) => format!("exited: {status}"),
            None if self.is_running() => "running".to_string(),
            None => "gone".to_string(),
        };
        format!(
            "{} (pid {}, {state})\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.label(),
            self.pid(),
            tail(&self.stderr(), PRINT_LIMIT),
            tail(&self.stdout(), PRINT_LIMIT),
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.shared.terminate(TERM_GRACE);
        if std::thread::panicking() {
            eprintln!("wgd-tests: output of {}", self.report());
        }
    }
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("label", &self.label())
            .field("pid", &self.pid())
            .finish()
    }
}

/// Runs `command` to completion with a hard `timeout` (killed and reaped by
/// pid if it overruns) and returns its output whatever its exit status.
pub fn run_command(mut command: Command, timeout: Duration) -> Result<Output> {
    let desc = describe(&command);
    let stdout = NamedTempFile::new().map_err(|e| Error::io("stdout temp file", e))?;
    let stderr = NamedTempFile::new().map_err(|e| Error::io("stderr temp file", e))?;
    let out = stdout
        .reopen()
        .map_err(|e| Error::io("reopen stdout temp file", e))?;
    let err = stderr
        .reopen()
        .map_err(|e| Error::io("reopen stderr temp file", e))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        cmd: desc.clone(),
        source,
    })?;
    let mut status = None;
    let waited = wait_until(timeout, &format!("`{desc}` to finish"), || {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(Ok(s));
                true
            }
            Ok(None) => false,
            Err(e) => {
                status = Some(Err(e));
                true
            }
        }
    });
    if let Err(timeout_err) = waited {
        // Not reaped yet, so the pid is still ours.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        return Err(timeout_err);
    }
    let status = match status {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(Error::io(format!("waiting for `{desc}`"), e)),
        None => return Err(Error::other(format!("`{desc}`: no exit status"))),
    };
    let read = |f: &NamedTempFile| -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(f.path())
            .and_then(|mut file| file.read_to_end(&mut buf))
            .map_err(|e| Error::io(format!("reading output of `{desc}`"), e))?;
        Ok(buf)
    };
    Ok(Output {
        status,
        stdout: read(&stdout)?,
        stderr: read(&stderr)?,
    })
}

/// Like [`run_command`], but an unsuccessful exit is an error carrying its
/// output; returns stdout as text.
pub fn run_checked(command: Command, timeout: Duration) -> Result<String> {
    let desc = describe(&command);
    let output = run_command(command, timeout)?;
    check_output(&desc, output)
}

pub(crate) fn check_output(desc: &str, output: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(Error::Command {
            cmd: desc.to_string(),
            status: output.status.to_string(),
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The pids now in `/proc`.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// The command line of `pid`, one string per argument (empty if gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The fields of `/proc/PID/task/TID/stat` after the parenthesised name:
/// element 0 is field 3 (state), so field N is element N - 3.
pub fn task_stat(pid: u32, tid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// (policy, rt_priority) of thread `tid` of `pid` (stat fields 41 and 40):
/// SCHED_OTHER is (0, 0), SCHED_RR at priority 1 is (2, 1).
pub fn sched_policy(pid: u32, tid: u32) -> Option<(u32, u32)> {
    let f = task_stat(pid, tid)?;
    Some((f.get(41 - 3)?.parse().ok()?, f.get(40 - 3)?.parse().ok()?))
}

/// True while `/proc/PID` exists (a live process or an unreaped zombie).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `program arg arg…`, for messages.
pub fn describe(command: &Command) -> String {
    let mut s = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn tail(s: &str, limit: usize) -> &str {
    if s.len() <= limit {
        return s;
    }
    let mut start = s.len() - limit;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_command_captures_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_command(cmd, Duration::from_secs(10)).expect("sh runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    }

    #[test]
    fn run_command_times_out_and_reaps() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let err = run_command(cmd, Duration::from_millis(200)).expect_err("must time out");
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }

    #[test]
    fn child_guard_kills_and_reaps() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello >&2; exec sleep 30"]);
        let child = Child::spawn(cmd, "sleeper").expect("spawn sh");
        let pid = child.pid();
        wait_until(Duration::from_secs(5), "stderr line", || {
            child.stderr().contains("hello")
        })
        .expect("child writes stderr");
        assert!(child.is_running());
        drop(child);
        assert!(!pid_exists(pid), "pid {pid} still exists after drop");
    }

    #[test]
    fn child_guard_escalates_to_sigkill() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
        let child = Child::spawn(cmd, "stubborn").expect("spawn sh");
        wait_until(Duration::from_secs(5), "trap installed", || {
            child.stdout().contains("ready")
        })
        .expect("child starts");
        let status = child.stop(Duration::from_millis(200)).expect("reaped");
        assert!(!status.success());
        assert!(!child.is_running());
    }
}
