//! Where the crypto role's wrapping key lives: the kernel keyring of the
//! daemon's own session.
//!
//! The crypto role seals every secret it is given and hands the sealed
//! blob to the parent to keep ([`wg_crypto::wrap`]), so that a crypto role
//! that dies can be replaced without losing keys that were given inline
//! (a configuration file's `PrivateKey`, `wg set`, `wg-quick`), while the
//! parent never holds a secret. The key that seals them must outlive any
//! one crypto process and be readable by crypto processes only:
//!
//! - the parent joins a new, anonymous session keyring at start
//!   ([`join_private_session`]); every process it starts inherits it;
//! - the first crypto role creates the wrapping key there (random, owned
//!   by its uid) and every later one reads it back ([`wrapping_key`]),
//!   after dropping privileges and before its seccomp filter, which allows
//!   no keyring call at all;
//! - the key may be read only by a process that possesses it (reaches it
//!   through its session keyring), not by its owner uid as such; the
//!   transport and handshake roles leave the daemon's session for one of
//!   their own at start ([`leave_session`]), so they do not possess it,
//!   and their filters forbid the keyring calls anyway.
//!
//! The key lives in kernel memory, never swapped to disk by a process's
//! pages, and goes when the last process of the session does. If the
//! kernel refuses keyrings (a container's seccomp profile may), crypto
//! has no wrapping key: inline secrets then cannot survive a crypto role's
//! death, and the parent fails closed as it would without this.
//!
//! Called by the parent's start-up ([`crate::parent`]) and by each role's
//! start ([`crate::roles::child_main`]).

use std::io;

use wg_crypto::wrap::WrappingKey;
use zeroize::Zeroizing;

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;

const KEY_POS_VIEW: u32 = 0x0100_0000;
const KEY_POS_READ: u32 = 0x0200_0000;
const KEY_POS_SEARCH: u32 = 0x0800_0000;
const KEY_USR_VIEW: u32 = 0x0001_0000;

/// The wrapping key's description in the session keyring.
const DESCRIPTION: &std::ffi::CStr = c"wgd:wrapping-key";
const KEY_TYPE: &std::ffi::CStr = c"user";

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Gives the calling process a new anonymous session keyring.
fn join_new_session() -> io::Result<()> {
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a null name reads no memory.
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    })
    .map(drop)
}

/// The parent, at start: a session keyring of the daemon's own (not the
/// administrator's login session, nor a service manager's), inherited by
/// every role it starts.
pub fn join_private_session() -> io::Result<()> {
    join_new_session()
}

/// The transport and handshake roles, at start: leave the daemon's session
/// keyring, so the wrapping key is not theirs to read.
pub fn leave_session() -> io::Result<()> {
    join_new_session()
}

/// The crypto role, after its privilege drop and before its filter: the
/// daemon's wrapping key, created if this is the first crypto role.
pub fn wrapping_key() -> io::Result<WrappingKey> {
    // SAFETY: two valid C strings; the destination keyring 0 means none.
    let found = check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_SESSION_KEYRING,
            KEY_TYPE.as_ptr(),
            DESCRIPTION.as_ptr(),
            0 as libc::c_long,
        )
    });
    match found {
        Ok(serial) => read_key(serial),
        Err(e) if e.raw_os_error() == Some(libc::ENOKEY) => create_key(),
        Err(e) => Err(e),
    }
}

fn read_key(serial: libc::c_long) -> io::Result<WrappingKey> {
    let mut buf = Zeroizing::new([0u8; 32]);
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            serial,
            buf.as_mut_ptr(),
            buf.len(),
        )
    })?;
    if n != 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the wrapping key in the session keyring has {n} bytes, not 32"),
        ));
    }
    Ok(WrappingKey::from_bytes(*buf))
}

fn create_key() -> io::Result<WrappingKey> {
    let key = WrappingKey::generate();
    let bytes = key.expose();
    // SAFETY: valid C strings and a 32-byte payload the kernel copies.
    let serial = check(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            KEY_TYPE.as_ptr(),
            DESCRIPTION.as_ptr(),
            bytes.as_ptr(),
            bytes.len(),
            KEY_SPEC_SESSION_KEYRING,
        )
    })?;
    // Readable by possession only: the owner uid alone (a role sharing
    // crypto's user, as `--allow-nobody` permits) may see that it exists.
    let perm = KEY_POS_VIEW | KEY_POS_READ | KEY_POS_SEARCH | KEY_USR_VIEW;
    // SAFETY: plain integers.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, serial, perm) })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test process takes a session keyring of its own (nothing else
    /// shares it): a key is created, then read back the same; a new
    /// session no longer finds it and makes another.
    #[test]
    fn the_wrapping_key_outlives_its_reader_within_the_session() {
        join_private_session().expect("a session keyring");
        let first = wrapping_key().expect("create the wrapping key");
        let again = wrapping_key().expect("read the wrapping key");
        assert_eq!(first.expose(), again.expose());
        leave_session().expect("a new session keyring");
        let other = wrapping_key().expect("another wrapping key");
        assert_ne!(first.expose(), other.expose());
    }
}
