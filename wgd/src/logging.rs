//! Logging to stderr with `tracing`, at the level `LOG_LEVEL` names, as
//! wireguard-go does: `error`, `info` (default), `debug` (or `verbose`),
//! `silent`. Every process calls [`init`] once with its role name, which
//! prefixes each line so interleaved output stays readable.
//!
//! Nothing in wgd logs key material: secret types redact themselves in
//! `Debug`, and no log statement formats a secret's bytes.

use tracing::level_filters::LevelFilter;

fn level() -> LevelFilter {
    match std::env::var("LOG_LEVEL").as_deref() {
        Ok("silent") | Ok("off") => LevelFilter::OFF,
        Ok("error") => LevelFilter::ERROR,
        Ok("debug") | Ok("verbose") => LevelFilter::DEBUG,
        _ => LevelFilter::INFO,
    }
}

/// Logging of the parent (and of a role's errors before it knows its
/// role): each line is prefixed `wgd[ROLE] LEVEL: `.
pub fn init(role: &'static str) {
    init_with(Prefixed(Some(role)));
}

/// Logging of a role, whose standard error is a pipe to the parent: lines
/// are `LEVEL: message`, and the parent adds `wgd[ROLE] ` itself (see
/// [`relay`]), so no role can write a line in another's name.
pub fn init_role() {
    init_with(Prefixed(None));
}

fn init_with(format: Prefixed) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level())
        .with_target(false)
        // A log line that cannot be written (stderr closed, or a pipe
        // nobody reads) is lost; it must never take the process down, as
        // the default report-the-error-to-stderr would.
        .log_internal_errors(false)
        .with_ansi(false)
        .without_time()
        .fmt_fields(tracing_subscriber::fmt::format::DefaultFields::new())
        .event_format(format)
        .try_init();
}

struct Prefixed(Option<&'static str>);

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Prefixed
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        if let Some(role) = self.0 {
            write!(writer, "wgd[{role}] ")?;
        }
        write!(writer, "{}: ", level.as_str().to_ascii_lowercase())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Longest line of a role's log the parent writes; the rest of a longer
/// line is cut (and marked) so a role cannot make the parent buffer
/// without bound.
const MAX_LINE: usize = 4096;

/// The parent's side of a role's log pipe: a thread that reads `pipe`
/// until the role's end closes (the role exited) and writes each line to
/// the parent's standard error as `wgd[ROLE] line`. Control characters
/// are escaped: a role must not be able to send terminal escape sequences
/// to wherever the parent's log goes.
pub(crate) fn relay(
    role: &'static str,
    pipe: std::os::fd::OwnedFd,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("log-{role}"))
        .spawn(move || {
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(std::fs::File::from(pipe));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let mut cut = false;
                // Read one line, at most MAX_LINE bytes of it kept.
                loop {
                    let chunk = match reader.fill_buf() {
                        Ok([]) => break,
                        Ok(c) => c,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                        Some(i) => (i + 1, true),
                        None => (chunk.len(), false),
                    };
                    let room = MAX_LINE.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..take.min(room)]);
                    cut |= take > room;
                    reader.consume(take);
                    if done {
                        break;
                    }
                }
                if buf.is_empty() {
                    return; // end of file: the role is gone
                }
                let line = sanitize(&buf, cut);
                let _ = std::io::stderr()
                    .lock()
                    .write_all(format!("wgd[{role}] {line}\n").as_bytes());
            }
        })
}

/// A role's log line as the parent writes it: without its newline, valid
/// UTF-8, control characters as `\xNN`.
fn sanitize(raw: &[u8], cut: bool) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut out = String::with_capacity(raw.len());
    for c in String::from_utf8_lossy(raw).chars() {
        if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str(" [cut]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn role_lines_are_defanged() {
        assert_eq!(sanitize(b"info: ok\n", false), "info: ok");
        assert_eq!(sanitize(b"x\x1b[2Jy\r\n", false), "x\\x1b[2Jy\\x0d");
        assert_eq!(sanitize(b"abc", true), "abc [cut]");
        assert_eq!(sanitize(b"\xff!", false), "\u{fffd}!");
    }
}
