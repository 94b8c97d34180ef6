//! One log event, one line: a tracing writer that escapes line breaks inside an event.
//!
//! Object keys and file names come from tenants and their servers, and may hold any byte but
//! `/` and NUL, newlines included. Fields that carry a key are logged with `Debug` (`key =
//! ?key`), which escapes them; but keys also reach the log inside error messages (a backend
//! error's context names its key, a server's message is quoted), and a name with `\n` in
//! them would start a new line that looks like an event of its own. So the writer escapes
//! every `\n` and `\r` of an event except the final newline: whatever a field holds, one
//! event stays one line.
//!
//! This relies on tracing-subscriber's fmt layer formatting each event into a buffer and
//! handing it to the writer in one `write_all` (it does), so a buffer is a whole event.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// [`MakeWriter`] whose writers escape line breaks inside each event (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct OneLine<M>(pub M);

/// The writer of [`OneLine`].
#[derive(Debug)]
pub(crate) struct OneLineWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        OneLineWriter(self.0.make_writer_for(meta))
    }
}

/// `event` with every `\n`/`\r` but a final `\n` written as `\n`/`\r` escapes; borrowed
/// when there is nothing to escape (the common case).
pub(crate) fn escape_event(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut out = Vec::with_capacity(event.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    std::borrow::Cow::Owned(out)
}

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // All of `buf` is taken, so `write_all` calls this once per event.
        self.0.write_all(&escape_event(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn only_the_final_newline_survives() {
        assert_eq!(&*escape_event(b"plain line\n"), b"plain line\n");
        assert_eq!(&*escape_event(b"a\nFAKE\r\n"), b"a\\nFAKE\\r\n");
        assert_eq!(&*escape_event(b"no end\nx"), b"no end\\nx");
        assert_eq!(&*escape_event(b""), b"");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_forged_line_in_a_message_stays_in_its_event() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(OneLine(move || sink.clone()))
            .finish();
        let key = "evil\n2026-01-01T00:00:00Z ERROR byosfs: FORGED";
        tracing::subscriber::with_default(subscriber, || {
            let error = format!("get {key}: no such key");
            tracing::warn!(%error, "request failed");
            tracing::info!(key = ?key, "opened");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines.iter().all(|l| l.contains("evil\\n2026")), "{text}");
        assert!(
            lines.iter().all(|l| !l.starts_with("2026") && l.contains("logline")),
            "{text}"
        );
    }
}
