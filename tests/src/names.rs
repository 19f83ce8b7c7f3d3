//! Names unique to this test run.
//!
//! `wt` + the low 16 bits of the pid as 4 hex digits + a one-letter kind +
//! a per-process counter in hex: at most 2 + 4 + 1 + 8 = 15 characters, so
//! every name also fits an interface name (IFNAMSIZ − 1). Two test
//! binaries running at once have different pids; tests in one binary draw
//! different counter values. Callers that create machine-wide objects
//! (namespaces, UAPI sockets) still check for a stale leftover of an earlier
//! crashed run with the same pid and draw again.

use std::sync::atomic::{AtomicU32, Ordering};

/// Longest Linux interface name.
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh name of the given kind: `n` namespace, `v` veth, `w` WireGuard
/// interface (any ASCII letter works).
pub fn unique_name(kind: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("wt{:04x}{kind}{n:x}", std::process::id() & 0xffff);
    debug_assert!(name.len() <= IFNAME_MAX, "{name} too long");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_short() {
        let a = unique_name('w');
        let b = unique_name('w');
        assert_ne!(a, b);
        assert!(a.starts_with("wt"));
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX);
    }
}
