//! Keys: `genkey`, `genpsk`, `pubkey` (output exactly as wg(8)'s: base64
//! and a newline), `addr` (the key-derived IPv6 address), and reading the
//! key files that `set` takes.
//!
//! Key generation and derivation are the workspace's own
//! (`wg_crypto::generate_private_key`, `wg_crypto::public_key`,
//! `PublicKey::derived_address`); this module only moves text in and out,
//! in zeroizing buffers where the text is a secret.

use std::io::{Read, Write};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proto::keys::{PublicKey, SecretKey};
use zeroize::Zeroizing;

use crate::error::{io_text, Error, Result};

/// More than any key file needs (44 characters of base64 and a newline);
/// a bound so that a path such as `/dev/zero` cannot eat memory.
const KEY_TEXT_MAX: usize = 1024;

/// `wgctl genkey`: a fresh private key, base64, newline.
pub fn genkey() -> Zeroizing<String> {
    let k = wg_crypto::generate_private_key();
    line_of(k.expose())
}

/// `wgctl genpsk`: 32 random bytes, base64, newline.
pub fn genpsk() -> Zeroizing<String> {
    use rand_core::{OsRng, RngCore};
    let mut b = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut b[..]);
    line_of(&b)
}

fn line_of(bytes: &[u8; 32]) -> Zeroizing<String> {
    // 44 characters and a newline: sized up front so the buffer holding
    // the secret is never reallocated.
    let mut s = Zeroizing::new(String::with_capacity(45));
    B64.encode_string(bytes, &mut s);
    s.push('\n');
    s
}

/// `wgctl pubkey`: the public key of the private key in `text` (base64,
/// surrounding white space ignored), base64 with a newline.
pub fn pubkey(text: &str) -> Result<String> {
    let k = SecretKey::from_base64(text)
        .map_err(|_| Error::new("pubkey: standard input is not a base64 private key"))?;
    Ok(format!("{}\n", wg_crypto::public_key(&k).to_base64()))
}

/// Reads all of `r` (a private key on standard input), bounded.
pub fn read_secret_text(mut r: impl Read, what: &str) -> Result<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(KEY_TEXT_MAX + 1));
    r.by_ref()
        .take(KEY_TEXT_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::new(format!("{what}: {}", io_text(&e))))?;
    if buf.len() > KEY_TEXT_MAX {
        return Err(Error::new(format!("{what}: too long to be a key")));
    }
    let text = std::str::from_utf8(&buf).map_err(|_| Error::new(format!("{what}: not text")))?;
    Ok(Zeroizing::new(text.to_string()))
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
        let raw = B64.decode(k.trim()).unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        assert_ne!(*genkey(), *k);
        let p = genpsk();
        assert_eq!(B64.decode(p.trim()).unwrap().len(), 32);
    }

    #[test]
    fn pubkey_of_a_known_key() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private = B64.encode(
            (0..32)
                .map(|i| {
                    u8::from_str_radix(
                        &"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
                            [i * 2..i * 2 + 2],
                        16,
                    )
                    .unwrap()
                })
                .collect::<Vec<u8>>(),
        );
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
        std::fs::write(&path, format!("{}\n", B64.encode([3u8; 32]))).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), Some(k));
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_key_file(&path).unwrap(), None);
        std::fs::write(&path, "secretsecret").unwrap();
        let e = read_key_file(&path).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        std::fs::write(&path, vec![b'A'; KEY_TEXT_MAX + 1]).unwrap();
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
