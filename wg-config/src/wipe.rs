//! Reading text that may hold a secret without leaving copies of it in
//! freed memory: the configuration file (`PrivateKey =`, `PresharedKey =`)
//! and the userspace API's `set` requests (`private_key=`,
//! `preshared_key=`), both read by wgd's parent, which must keep no secret
//! once the crypto role has it (issue 11; the memory scan in
//! `tests/tests/secrets.rs` is the judge).
//!
//! The standard library's readers are not made for this: a `BufReader`
//! keeps what it read in its buffer until it is overwritten, and frees the
//! buffer without wiping it; `read_to_end` and `read_to_string` grow their
//! `Vec` by reallocation, which leaves each earlier copy in freed memory.
//! The two here wipe as they go.

use std::io::{self, BufRead, Read};

use zeroize::{Zeroize, Zeroizing};

/// How much a [`WipingReader`] buffers: as much as `BufReader` does.
pub const WIPING_BUF: usize = 8 * 1024;

/// A buffered reader that wipes every byte as it is consumed, and its
/// whole buffer when dropped: a line holding a key is gone from the
/// buffer the moment the parser has taken it.
pub struct WipingReader<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

impl<R: Read> WipingReader<R> {
    pub fn new(inner: R) -> Self {
        WipingReader {
            inner,
            buf: vec![0u8; WIPING_BUF].into_boxed_slice(),
            pos: 0,
            filled: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R> Drop for WipingReader<R> {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl<R: Read> Read for WipingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for WipingReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.filled {
            // Everything before was consumed, and so wiped.
            self.pos = 0;
            self.filled = 0;
            self.filled = self.inner.read(&mut self.buf)?;
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, amt: usize) {
        let end = self.pos.saturating_add(amt).min(self.filled);
        self.buf[self.pos..end].zeroize();
        self.pos = end;
    }
}

/// Reads all of `r`, at most `max` bytes (more is an `InvalidData` error),
/// into a buffer that wipes itself when dropped. `size_hint` (a file's
/// length) sizes the buffer so that it is usually allocated once; should
/// the input be longer, the buffer is replaced by a larger one and the old
/// one wiped, never reallocated in place.
pub fn read_all_wiping(
    mut r: impl Read,
    size_hint: usize,
    max: usize,
) -> io::Result<Zeroizing<Vec<u8>>> {
    // One byte more than the hint, to see the end without growing.
    let mut cap = size_hint.saturating_add(1).clamp(1, max.saturating_add(1));
    let mut buf = Zeroizing::new(vec![0u8; cap]);
    let mut len = 0;
    loop {
        if len == cap {
            if cap > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("longer than {max} bytes"),
                ));
            }
            cap = cap.saturating_mul(2).min(max.saturating_add(1));
            let mut bigger = Zeroizing::new(vec![0u8; cap]);
            bigger[..len].copy_from_slice(&buf[..len]);
            // The old buffer is wiped as it is dropped here.
            buf = bigger;
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    // Shortening a Vec never reallocates; the tail is zeros.
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out at most `step` bytes a read.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(self.1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_reader_wipes_what_was_consumed() {
        let text = b"set=1\nprivate_key=abcdef\n\n";
        let mut r = WipingReader::new(&text[..]);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).expect("read");
        assert_eq!(line, b"set=1\n");
        assert!(r.buf[..6].iter().all(|&b| b == 0), "consumed and wiped");
        assert_eq!(&r.buf[6..text.len()], &text[6..]);
        line.clear();
        r.read_until(b'\n', &mut line).expect("read");
        assert_eq!(line, b"private_key=abcdef\n");
        assert!(r.buf[..text.len() - 1].iter().all(|&b| b == 0));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("read");
        assert_eq!(rest, b"\n");
        assert!(r.buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn the_reader_reads_what_bufreader_reads() {
        let text: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        for step in [1, 7, 4096, 100_000] {
            let mut r = WipingReader::new(Trickle(&text, step));
            let mut got = Vec::new();
            r.read_to_end(&mut got).expect("read");
            assert_eq!(got, text, "step {step}");
        }
    }

    #[test]
    fn read_all_fits_the_hint_or_grows_by_replacing() {
        let text: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        for hint in [0, 1, 100, 9_999, 10_000, 20_000] {
            for step in [3, 10_000] {
                let got = read_all_wiping(Trickle(&text, step), hint, 1 << 20).expect("read");
                assert_eq!(&got[..], &text[..], "hint {hint} step {step}");
            }
        }
        let got = read_all_wiping(&text[..], text.len(), text.len()).expect("exactly max");
        assert_eq!(got.len(), text.len());
        let e = read_all_wiping(&text[..], 10, text.len() - 1).expect_err("over max");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = read_all_wiping(io::repeat(1), 0, 1000).expect_err("endless");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(read_all_wiping(&b""[..], 0, 0).expect("empty").is_empty());
    }
}
