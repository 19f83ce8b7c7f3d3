//! Searching the memory of a running process for secrets: the judge of
//! "the parent keeps no secret" (issue 11, `tests/tests/secrets.rs`).
//!
//! [`scan`] reads `/proc/PID/maps` and, through `/proc/PID/mem`, every
//! readable mapping that a process can have written: anonymous memory
//! (heap, thread stacks, glibc's arenas), `[heap]`, `[stack]` and
//! writable file mappings (`.data`, `.bss`). Read-only mappings of files
//! (code, constants) are skipped: what is in them is what is in the file.
//! Reading another process's memory needs ptrace rights over it; the tests
//! run as root, which has them even over a non-dumpable process.
//!
//! A secret is looked for in each form wgd may have seen it in: the 32 raw
//! bytes, base64 (the configuration file, key files) and hex (the
//! userspace API), lower and upper case.

use std::fs::File;
use std::os::unix::fs::FileExt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::error::{Error, Result};

/// Bytes read from `/proc/PID/mem` at a time.
const CHUNK: usize = 1 << 20;

/// One form of one secret to look for.
#[derive(Debug, Clone)]
pub struct Needle {
    /// What it is, for messages: `psk (hex)`.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The forms of a 32-byte key given in base64: raw, base64, hex in lower
/// and upper case.
pub fn key_forms(name: &str, key_b64: &str) -> Result<Vec<Needle>> {
    let raw = B64
        .decode(key_b64.trim())
        .map_err(|e| Error::other(format!("{name} is not base64: {e}")))?;
    if raw.len() != 32 {
        return Err(Error::other(format!("{name} is not 32 bytes")));
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Ok(vec![
        Needle {
            name: format!("{name} (raw)"),
            bytes: raw.clone(),
        },
        Needle {
            name: format!("{name} (base64)"),
            bytes: B64.encode(&raw).into_bytes(),
        },
        Needle {
            name: format!("{name} (hex)"),
            bytes: hex.clone().into_bytes(),
        },
        Needle {
            name: format!("{name} (HEX)"),
            bytes: hex.to_uppercase().into_bytes(),
        },
    ])
}

/// Where a needle was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub needle: String,
    /// The mapping's line in `/proc/PID/maps`.
    pub mapping: String,
    pub address: u64,
}

/// What one scan saw.
#[derive(Debug, Default)]
pub struct Scan {
    pub hits: Vec<Hit>,
    /// Bytes read.
    pub scanned: u64,
    /// Mappings that could not be read (unmapped while scanning, or
    /// special): named so a failure can say what it did not see.
    pub unreadable: Vec<String>,
}

impl Scan {
    /// Whether the needle called `name` was found.
    pub fn found(&self, name: &str) -> bool {
        self.hits.iter().any(|h| h.needle == name)
    }
}

/// A mapping worth scanning: readable, and writable or not backed by a
/// file.
fn wanted(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace();
    let range = f.next()?;
    let perms = f.next()?;
    let path = f.nth(3).unwrap_or("");
    if !perms.starts_with('r') {
        return None;
    }
    if matches!(path, "[vvar]" | "[vvar_vclock]" | "[vsyscall]" | "[vdso]") {
        return None;
    }
    let file_backed = path.starts_with('/');
    let writable = perms.as_bytes().get(1) == Some(&b'w');
    if file_backed && !writable {
        return None;
    }
    let (a, b) = range.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// Searches the memory of process `pid` for every needle.
pub fn scan(pid: u32, needles: &[Needle]) -> Result<Scan> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| Error::io(format!("read /proc/{pid}/maps"), e))?;
    let mem = File::open(format!("/proc/{pid}/mem"))
        .map_err(|e| Error::io(format!("open /proc/{pid}/mem"), e))?;
    // Needles by first byte, so one pass over the memory checks them all.
    let mut by_first: Vec<Vec<&Needle>> = vec![Vec::new(); 256];
    for n in needles {
        if let Some(&b) = n.bytes.first() {
            by_first[usize::from(b)].push(n);
        }
    }
    let longest = needles.iter().map(|n| n.bytes.len()).max().unwrap_or(1);
    let mut out = Scan::default();
    let mut buf = vec![0u8; CHUNK + longest];
    for line in maps.lines() {
        let Some((start, end)) = wanted(line) else {
            continue;
        };
        // Each chunk overlaps the next by `longest - 1` bytes, so a needle
        // across a chunk boundary is seen (and none is seen twice).
        let mut at = start;
        while at < end {
            let want =
                usize::try_from((end - at).min((CHUNK + longest - 1) as u64)).unwrap_or(CHUNK);
            // An error (a mapping gone since `maps` was read) reads as
            // nothing, and the mapping is reported unreadable below.
            let n: usize = mem.read_at(&mut buf[..want], at).unwrap_or_default();
            if n == 0 {
                out.unreadable.push(line.to_string());
                break;
            }
            let data = &buf[..n];
            for (i, b) in data.iter().enumerate() {
                for needle in &by_first[usize::from(*b)] {
                    let len = needle.bytes.len();
                    // A match starting in the overlap belongs to the next
                    // chunk, unless this is the mapping's last.
                    let last = at + n as u64 >= end;
                    if (i < CHUNK || last)
                        && data.len() >= i + len
                        && data[i..i + len] == needle.bytes[..]
                    {
                        out.hits.push(Hit {
                            needle: needle.name.clone(),
                            mapping: line.to_string(),
                            address: at + i as u64,
                        });
                    }
                }
            }
            out.scanned += n.min(CHUNK) as u64;
            if n < want {
                out.unreadable.push(line.to_string());
                break;
            }
            at += CHUNK as u64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key planted in this process's heap in each form, straddling a
    /// chunk boundary, is found at the address it was planted at (reading
    /// one's own memory needs no privilege).
    #[test]
    fn finds_what_is_planted_where_it_is() {
        let forms = key_forms("k", &B64.encode([0x5au8; 32])).expect("forms");
        let mut planted = Vec::new();
        for f in &forms {
            let mut v = vec![0u8; 3 * CHUNK];
            // Across the boundary of the chunk the mapping's reading may
            // cut here, wherever the block starts.
            let off = CHUNK - 3;
            v[off..off + f.bytes.len()].copy_from_slice(&f.bytes);
            planted.push((f.name.clone(), v.as_ptr() as u64 + off as u64, v));
        }
        let s = scan(std::process::id(), &forms).expect("scan");
        for (name, addr, _) in &planted {
            assert!(
                s.hits
                    .iter()
                    .any(|h| &h.needle == name && h.address == *addr),
                "{name} not found at {addr:#x}: {:?}",
                s.hits
            );
        }
        assert!(s.scanned > 3 * CHUNK as u64);
        assert!(wanted("7f00-7f10 r--p 00000000 08:01 123 /usr/lib/libc.so.6").is_none());
        assert!(wanted("7f00-7f10 rw-p 00000000 08:01 123 /usr/lib/libc.so.6").is_some());
        assert!(wanted("7f00-7f10 rw-p 00000000 00:00 0 ").is_some());
        assert!(wanted("7f00-7f10 rw-p 00000000 00:00 0 [heap]").is_some());
        assert!(wanted("7f00-7f10 ---p 00000000 00:00 0 ").is_none());
        assert!(wanted("7f00-7f10 r--p 00000000 00:00 0 [vvar]").is_none());
    }
}
