//! Installs the tracing subscriber (binaries only): human-readable or JSON
//! lines on stderr, filtered by `RUST_LOG` or the config's `log.filter`.
//! Targets name the subsystem: `fairgrid::net`, `fairgrid::adverts`,
//! `fairgrid::trust`, `fairgrid::ledger`, `fairgrid::api`, `fairgrid::node`.
//!
//! Log lines often carry what peers sent (refusal reasons, agent strings,
//! names). In the human format a line break or carriage return in such a
//! value would forge a log line of its own, so every line break inside an
//! event is written escaped (`\n`, `\r`); tracing-subscriber already
//! escapes ANSI sequences in values, and the JSON format escapes all
//! control characters.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

pub fn init(format: &str, filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env)?,
        _ => {
            EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("log filter {filter:?}: {e}"))?
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match format {
        "json" => builder.json().with_writer(io::stderr).try_init(),
        _ => builder.with_writer(OneLinePerEvent).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the logger: {e}"))
}

/// Stderr, with line breaks inside an event escaped.
#[derive(Clone, Copy)]
struct OneLinePerEvent;

impl<'a> MakeWriter<'a> for OneLinePerEvent {
    type Writer = EscapingWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(io::stderr())
    }
}

/// Writes each buffer (the formatter writes one event per call) with every
/// `\r`, and every `\n` but a final one, escaped.
pub struct EscapingWriter<W: Write>(pub W);

/// `event` with its inner line breaks escaped.
pub fn escape_line_breaks(event: &[u8]) -> Vec<u8> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.iter().any(|&b| b == b'\r' || b == b'\n') || buf == b"\n" {
            return self.0.write(buf);
        }
        self.0.write_all(&escape_line_breaks(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_line_breaks_cannot_forge_a_log_line() {
        let event = b"INFO fairgrid::jobs: refused reason=x\r\nERROR forged line\n";
        let written = escape_line_breaks(event);
        assert_eq!(
            written,
            b"INFO fairgrid::jobs: refused reason=x\\r\\nERROR forged line\n".to_vec()
        );
        assert_eq!(escape_line_breaks(b"plain\n"), b"plain\n".to_vec());
        let mut sink = EscapingWriter(Vec::new());
        sink.write_all(event).unwrap();
        assert_eq!(sink.0.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
