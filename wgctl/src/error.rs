//! The one error type of `wgctl`: a message that `main` prints as a single
//! line, `wgctl: MESSAGE`, before exiting non-zero.
//!
//! Messages never contain a key's value: a mistyped private key is still
//! mostly a private key.

use std::fmt;

/// A failure, already worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    /// Exit status: 1 for failures, 2 for usage errors (as clap does).
    pub status: u8,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: one_line(message.into()),
            status: 1,
        }
    }

    /// A mistake in the command line.
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            message: one_line(message.into()),
            status: 2,
        }
    }

    /// A failure already reported (status 1, nothing more to print).
    pub fn quiet() -> Self {
        Error {
            message: String::new(),
            status: 1,
        }
    }

    /// The same error with `context: ` in front.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
            status: self.status,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors are printed as one line: line breaks (e.g. from an I/O error
/// or a configuration message) become spaces.
fn one_line(s: String) -> String {
    if s.contains(['\n', '\r']) {
        s.split(['\n', '\r'])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        s
    }
}

/// The system's text for an errno value, e.g. `Invalid argument` for 22.
pub fn strerror(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).desc().to_string()
}

/// An I/O error without Rust's ` (os error N)` suffix, so messages read
/// like a C tool's: `No such file or directory`.
pub fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => strerror(n),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_only() {
        let e = Error::new("a\nb\r\nc");
        assert_eq!(e.to_string(), "a b c");
        assert_eq!(Error::new("x").context("wg0").to_string(), "wg0: x");
        assert_eq!(Error::usage("x").status, 2);
    }

    #[test]
    fn errno_text() {
        assert_eq!(strerror(22), "Invalid argument");
        assert_eq!(
            io_text(&std::io::Error::from_raw_os_error(2)),
            "No such file or directory"
        );
    }
}
