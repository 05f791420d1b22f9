//! The member's log: etcd's `--log-level`, `--log-format` and
//! `--log-outputs`.
//!
//! Two formats. `json` writes one object per line with zap's field names as
//! etcd 3.5 writes them (`level`, `ts`, `caller`, `msg`, then the event's own
//! fields by name, numbers and booleans as JSON values), so a log shipper
//! configured for etcd parses cairn's lines unchanged. `console` is
//! tracing's plain text. The default is `console` when the log goes only to
//! a terminal and `json` otherwise (a journal, a file, a pipe), as etcd logs
//! JSON by default.
//!
//! Outputs are etcd's: `default` and `stderr`, `stdout`, `journal` (written
//! to stderr, which systemd hands to the journal), and any other value is a
//! file, opened for appending and created if missing. Each event is
//! formatted once and written whole to every output.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Where the log goes, as `--log-outputs` names them.
enum Output {
    Stderr,
    Stdout,
    File(Mutex<File>),
}

/// Every output of the log; a [`MakeWriter`] that tees to all of them.
#[derive(Clone)]
pub struct Outputs(Arc<Vec<Output>>);

impl Outputs {
    /// Opens the outputs `--log-outputs` lists (empty means `default`).
    pub fn open(names: &[String]) -> Result<Self, String> {
        let mut outs = Vec::new();
        for name in names {
            let out = match name.as_str() {
                "default" | "stderr" | "journal" => Output::Stderr,
                "stdout" => Output::Stdout,
                path => {
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| format!("--log-outputs: cannot open {path}: {e}"))?;
                    Output::File(Mutex::new(file))
                }
            };
            outs.push(out);
        }
        if outs.is_empty() {
            outs.push(Output::Stderr);
        }
        Ok(Self(Arc::new(outs)))
    }

    /// Whether every output is a terminal: then colours and plain text suit.
    fn all_terminals(&self) -> bool {
        self.0.iter().all(|o| match o {
            Output::Stderr => io::stderr().is_terminal(),
            Output::Stdout => io::stdout().is_terminal(),
            Output::File(_) => false,
        })
    }
}

/// One event's bytes on their way to every output.
pub struct Tee<'a>(&'a [Output]);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    // The formatter hands over a whole event at once; each output gets it in
    // one write so lines from two threads never interleave within a file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut first_err = None;
        for out in self.0 {
            let res = match out {
                Output::Stderr => io::stderr().lock().write_all(buf),
                Output::Stdout => io::stdout().lock().write_all(buf),
                Output::File(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf),
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Outputs {
    type Writer = Tee<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Tee(&self.0)
    }
}

/// zap's JSON line, as etcd 3.5 writes it.
pub struct EtcdJson;

/// The event's fields: its message and the rest, in the order given.
#[derive(Default)]
struct Fields {
    msg: String,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(s)) => self.msg = s,
            (name, value) => self.rest.push((name, value)),
        }
    }
}

/// zap's level names (tracing has no dpanic/panic/fatal; trace is below debug).
fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "debug",
    }
}

impl<S, N> FormatEvent<S, N> for EtcdJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let caller = match (meta.file(), meta.line()) {
            (Some(file), Some(line)) => format!("{}:{line}", file.trim_start_matches("src/")),
            _ => meta.target().to_string(),
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let json = |v: &str| serde_json::Value::from(v).to_string();
        write!(
            writer,
            "{{\"level\":\"{}\",\"ts\":{},\"caller\":{},\"msg\":{}",
            level_name(meta.level()),
            json(&ts),
            json(&caller),
            json(&fields.msg)
        )?;
        for (name, value) in &fields.rest {
            write!(writer, ",{}:{value}", json(name))?;
        }
        writeln!(writer, "}}")
    }
}

/// Installs the global subscriber: `filter` for levels, `format` (`None`
/// picks by the outputs) and `outputs` as `--log-outputs` gives them.
pub fn init(
    filter: tracing_subscriber::EnvFilter,
    format: Option<&str>,
    outputs: &[String],
) -> Result<(), String> {
    let outs = Outputs::open(outputs)?;
    let terminal = outs.all_terminals();
    let json = match format {
        Some(f) => f == "json",
        None => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(outs);
    if json {
        builder.event_format(EtcdJson).init();
    } else {
        builder.with_ansi(terminal).init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// A writer into a shared buffer, to read back what the format wrote.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_zaps_fields_and_typed_context() {
        let buf = Buf::default();
        let out = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(EtcdJson)
            .with_writer(move || out.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(term = 3u64, ok = true, name = %"m\"1", "said \"hi\"");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "said \"hi\"");
        assert_eq!(v["term"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["name"], "m\"1");
        assert!(
            v["caller"].as_str().unwrap().starts_with("logging.rs:"),
            "{v}"
        );
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && &ts[10..11] == "T",
            "{ts}"
        );
        // zap's order: the fixed fields first.
        assert!(text.starts_with("{\"level\":\"warn\",\"ts\":"), "{text}");
    }

    #[test]
    fn outputs_append_to_files_and_default_to_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old\n").unwrap();
        let outs = Outputs::open(&[path.display().to_string()]).unwrap();
        outs.make_writer().write_all(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
        assert!(!outs.all_terminals());
        let missing = dir.path().join("no/such/dir/x.log");
        let err = Outputs::open(&[missing.display().to_string()])
            .err()
            .unwrap();
        assert!(err.contains("cannot open"), "{err}");
        assert_eq!(Outputs::open(&[]).unwrap().0.len(), 1);
    }
}
