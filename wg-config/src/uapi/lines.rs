//! Reading a request line by line with every read bounded: a line never
//! takes more than [`MAX_LINE`] + 1 bytes off the socket, so a client
//! cannot make the server buffer without limit.

use std::io::{self, BufRead};

use super::{UapiError, MAX_LINE};

pub(super) enum LineEnd {
    Newline,
    Eof,
}

/// Reads one line, without its `\n`, into `buf` (cleared first).
///
/// `Ok(None)`: end of input before any byte. `Some(Eof)`: end of input
/// after a partial line. Consumes at most `MAX_LINE + 1` bytes: a line
/// longer than [`MAX_LINE`] is an error as soon as that is known.
pub(super) fn read_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<LineEnd>, UapiError> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UapiError::io(&e)),
        };
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                None
            } else {
                Some(LineEnd::Eof)
            });
        }
        // Invariant: buf.len() <= MAX_LINE, so room >= 1.
        let room = MAX_LINE + 1 - buf.len();
        let window = &avail[..avail.len().min(room)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&window[..i]);
            r.consume(i + 1);
            return Ok(Some(LineEnd::Newline));
        }
        let n = window.len();
        buf.extend_from_slice(window);
        r.consume(n);
        if buf.len() > MAX_LINE {
            return Err(UapiError::invalid(format!(
                "line longer than {MAX_LINE} bytes"
            )));
        }
    }
}

pub(super) fn read_byte<R: BufRead>(r: &mut R) -> Result<Option<u8>, UapiError> {
    loop {
        match r.fill_buf() {
            Ok([]) => return Ok(None),
            Ok([b, ..]) => {
                let b = *b;
                r.consume(1);
                return Ok(Some(b));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UapiError::io(&e)),
        }
    }
}
