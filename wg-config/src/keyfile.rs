//! Reading a key's text from a file or a stream (`PrivateKeyFile =`,
//! `wgctl set … private-key FILE`, `wgctl pubkey` on standard input),
//! bounded and without leaving copies of the secret in freed memory.
//!
//! Only the reading is here; what the text means (a key, or "no key" for
//! an empty file) and how a failure is worded belong to the caller.

use std::io::{self, Read};

use thiserror::Error;
use zeroize::Zeroizing;

/// The most bytes a key's text may take. A key is 44 characters of base64
/// and perhaps a newline; the bound keeps a mistaken path such as
/// `/dev/zero` from eating memory.
pub const KEY_TEXT_MAX: usize = 1024;

/// Why a key's text could not be read.
#[derive(Debug, Error)]
pub enum KeyTextError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("too large to hold a key")]
    TooLarge,
    /// The bytes are not UTF-8 (so not base64 either).
    #[error("not text")]
    NotText,
}

/// Reads all of `r`, at most [`KEY_TEXT_MAX`] bytes, into a zeroizing
/// string. Reads at most one byte more than the bound.
pub fn read_key_text(mut r: impl Read) -> Result<Zeroizing<String>, KeyTextError> {
    // A fixed buffer rather than a growing Vec: reallocation would leave
    // copies of the key in freed memory that nobody zeroizes.
    let mut buf = Zeroizing::new([0u8; KEY_TEXT_MAX + 1]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(KeyTextError::TooLarge);
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let text = std::str::from_utf8(&buf[..len]).map_err(|_| KeyTextError::NotText)?;
    let mut out = Zeroizing::new(String::with_capacity(len));
    out.push_str(text);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_within_the_bound() {
        let key = "A".repeat(43) + "=\n";
        assert_eq!(*read_key_text(key.as_bytes()).unwrap(), key);
        assert_eq!(*read_key_text(&b""[..]).unwrap(), "");
        let most = vec![b' '; KEY_TEXT_MAX];
        assert_eq!(read_key_text(&most[..]).unwrap().len(), KEY_TEXT_MAX);
    }

    #[test]
    fn refuses_what_cannot_be_a_key() {
        let big = vec![b'A'; KEY_TEXT_MAX + 1];
        assert!(matches!(
            read_key_text(&big[..]),
            Err(KeyTextError::TooLarge)
        ));
        // An endless source is refused after a bounded read.
        let mut zero = io::repeat(0).take(u64::MAX);
        assert!(matches!(
            read_key_text(&mut zero),
            Err(KeyTextError::TooLarge)
        ));
        assert_eq!(zero.limit(), u64::MAX - (KEY_TEXT_MAX as u64 + 1));
        assert!(matches!(
            read_key_text(&b"caf\xe9"[..]),
            Err(KeyTextError::NotText)
        ));
        let dir = tempfile::tempdir().unwrap();
        let e = read_key_text(std::fs::File::open(dir.path()).unwrap()).unwrap_err();
        assert!(matches!(e, KeyTextError::Io(_)), "{e}");
    }
}
