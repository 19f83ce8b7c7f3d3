//! The harness's one error type.

use std::fmt;
use std::time::Duration;

/// What went wrong in the harness. Every variant names what it was doing,
/// so a failing test's message says which step failed and why.
#[derive(Debug)]
pub enum Error {
    /// A command could not be started at all.
    Spawn { cmd: String, source: std::io::Error },
    /// A command ran and exited unsuccessfully.
    Command {
        cmd: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    /// A bounded wait ran out.
    Timeout { what: String, after: Duration },
    /// Any other I/O failure, with what was being done.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// Output of a tool that did not parse, or a harness precondition.
    Other(String),
}

/// `Result` with the harness's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn other(msg: impl Into<String>) -> Self {
        Error::Other(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn { cmd, source } => write!(f, "cannot start `{cmd}`: {source}"),
            Error::Command {
                cmd,
                status,
                stdout,
                stderr,
            } => {
                write!(f, "`{cmd}` failed ({status})")?;
                if !stderr.trim().is_empty() {
                    write!(f, "\n--- stderr ---\n{}", stderr.trim_end())?;
                }
                if !stdout.trim().is_empty() {
                    write!(f, "\n--- stdout ---\n{}", stdout.trim_end())?;
                }
                Ok(())
            }
            Error::Timeout { what, after } => {
                write!(f, "timed out after {after:?} waiting for {what}")
            }
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
