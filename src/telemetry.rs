//! Tracing setup: `RUST_LOG` filters, `LOG_FORMAT=text|json` chooses the output, which goes
//! to stdout and, with `LOG_DIR`, also to daily files.
//!
//! Text is coloured only when stdout is a terminal (and `NO_COLOR` is unset), so pipes,
//! files and log collectors never get ANSI escape codes.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};

/// The log files of `LOG_DIR`: `wagate.YYYY-MM-DD.log`, a new one each day (UTC).
pub const LOG_FILE_PREFIX: &str = "wagate";
pub const LOG_FILE_SUFFIX: &str = "log";

/// Installs the global subscriber once per process (later calls are ignored).
///
/// With `LOG_DIR` set, returns the guard of the file writer: keep it until the process
/// ends, so the last lines reach the file. Fails when the directory cannot be written.
pub fn init(config: &Config) -> Result<Option<WorkerGuard>, String> {
    let filter = EnvFilter::try_new(&config.rust_log).unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut outputs = vec![output(config.log_format, colour, std::io::stdout)];
    let mut guard = None;
    if let Some(dir) = &config.log_dir {
        let (writer, g) = tracing_appender::non_blocking(log_files(dir)?);
        outputs.push(output(config.log_format, false, writer));
        guard = Some(g);
    }
    let _ = tracing_subscriber::registry()
        .with(outputs)
        .with(filter)
        .try_init();
    Ok(guard)
}

/// Daily files under `dir`, created if missing.
fn log_files(dir: &Path) -> Result<RollingFileAppender, String> {
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_FILE_PREFIX)
        .filename_suffix(LOG_FILE_SUFFIX)
        .build(dir)
        .map_err(|e| format!("LOG_DIR ({}): cannot write log files: {e}", dir.display()))
}

/// One output in the configured format; `ansi` colours text.
fn output<W>(format: LogFormat, ansi: bool, writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
        LogFormat::Text => layer.boxed(),
    }
}
