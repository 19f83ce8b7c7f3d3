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

pub fn init(role: &'static str) {
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
        .event_format(Prefixed(role))
        .try_init();
}

struct Prefixed(&'static str);

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
        write!(
            writer,
            "wgd[{}] {}: ",
            self.0,
            level.as_str().to_ascii_lowercase()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
