//! Keys: `genkey`, `genpsk`, `pubkey` (output exactly as wg(8)'s: base64
//! and a newline), `addr` (the key-derived IPv6 address), and reading the
//! key files that `set` takes.
//!
//! Key generation and derivation are the shared language's
//! (`wg_config::keys`; the key-derived address is
//! `PublicKey::derived_address`); this module only moves text in and out,
//! in zeroizing buffers where the text is a secret.

use std::io::{Read, Write};
use std::path::Path;

use proto::keys::{PublicKey, SecretKey};
use wg_config::keyfile::{read_key_text, KeyTextError};
use wg_config::keys;
use zeroize::Zeroizing;

use crate::error::{io_text, Error, Result};

/// `wgctl genkey`: a fresh private key, base64, newline.
pub fn genkey() -> Zeroizing<String> {
    keys::secret_line(&keys::generate_private_key())
}

/// `wgctl genpsk`: 32 random bytes, base64, newline.
pub fn genpsk() -> Zeroizing<String> {
    keys::secret_line(&keys::generate_preshared_key())
}

/// `wgctl pubkey`: the public key of the private key in `text` (base64,
/// surrounding white space ignored), base64 with a newline.
pub fn pubkey(text: &str) -> Result<String> {
    let k = SecretKey::from_base64(text)
        .map_err(|_| Error::new("pubkey: standard input is not a base64 private key"))?;
    Ok(format!("{}\n", keys::public_key(&k).to_base64()))
}

/// Reads all of `r` (a private key on standard input), bounded.
pub fn read_secret_text(r: impl Read, what: &str) -> Result<Zeroizing<String>> {
    read_key_text(r).map_err(|e| match e {
        KeyTextError::Io(e) => Error::new(format!("{what}: {}", io_text(&e))),
        KeyTextError::TooLarge => Error::new(format!("{what}: too long to be a key")),
        KeyTextError::NotText => Error::new(format!("{what}: not text")),
    })
}

/// A key file for `set`: a base64 key, white space around it ignored.
/// An empty file means "remove the key" (`None`), as in wg(8).
pub fn read_key_file(path: &Path) -> Result<Option<SecretKey>> {
    let what = path.display().to_string();
    let file =
        std::fs::File::open(path).map_err(|e| Error::new(format!("{what}: {}", io_text(&e))))?;
    let text = read_secret_text(file, &what)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    // The message never quotes the file's content.
    SecretKey::from_base64(&text)
        .map(Some)
        .map_err(|_| Error::new(format!("{what}: not a base64 key")))
}

/// A public key given on the command line, in base64 (or hex).
pub fn parse_public_key(s: &str) -> Result<PublicKey> {
    PublicKey::from_base64(s)
        .or_else(|_| PublicKey::from_hex(s.trim()))
        .map_err(|_| Error::usage(format!("`{s}' is not a base64 public key")))
}

/// `wgctl addr KEY`: the key-derived IPv6 address and a newline.
pub fn addr(key: &str) -> Result<String> {
    Ok(format!("{}\n", parse_public_key(key)?.derived_address()))
}

/// wg(8) warns when a new key goes to a file others can read; so does
/// `wgctl`. Returns the warning to print, if any.
pub fn world_readable_warning() -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    // fd 1 itself, not what a symlink name would resolve to later.
    let meta = std::fs::metadata("/proc/self/fd/1").ok()?;
    (meta.file_type().is_file() && meta.permissions().mode() & 0o007 != 0)
        .then_some(
            "Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.",
        )
}

/// Writes a secret to standard output.
pub fn write_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(format!("writing to standard output: {}", io_text(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genkey_is_clamped_base64() {
        let k = genkey();
        assert_eq!(k.len(), 45);
        assert!(k.ends_with('\n'));
        let key = SecretKey::from_base64(k.trim()).unwrap();
        let raw = key.expose();
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        assert_ne!(*genkey(), *k);
        let p = genpsk();
        assert_eq!(p.len(), 45);
        assert!(SecretKey::from_base64(p.trim()).is_ok());
    }

    #[test]
    fn pubkey_of_a_known_key() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private =
            PublicKey::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .to_base64();
        let public =
            PublicKey::from_hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
                .unwrap();
        assert_eq!(
            pubkey(&format!("{private}\n")).unwrap(),
            format!("{}\n", public.to_base64())
        );
        assert!(pubkey("not a key").is_err());
        assert!(pubkey("").is_err());
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::from_bytes([3; 32]);
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{}\n", PublicKey([3; 32]).to_base64())).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), Some(k));
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_key_file(&path).unwrap(), None);
        std::fs::write(&path, "secretsecret").unwrap();
        let e = read_key_file(&path).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        std::fs::write(&path, vec![b'A'; wg_config::keyfile::KEY_TEXT_MAX + 1]).unwrap();
        assert!(read_key_file(&path).is_err());
        assert!(read_key_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn derived_address() {
        let k = PublicKey(core::array::from_fn(|i| i as u8));
        let a = addr(&k.to_base64()).unwrap();
        assert_eq!(a, format!("{}\n", k.derived_address()));
        assert!(a.starts_with("fd77:"));
        assert_eq!(addr(&k.to_hex()).unwrap(), a);
        assert!(addr("nope").is_err());
    }
}
