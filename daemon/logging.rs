//! Where log lines go: stderr (with syslog priority prefixes when stderr is
//! the systemd journal, so journald keeps the levels), or syslog.

use std::io::Write;

use crate::config::LogTarget;

struct Stderr {
    journal: bool,
}

/// `<N>` syslog priority of a level, as journald reads it on stderr.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // One line per event: newlines inside a message are flattened.
        let msg = r.args().to_string().replace('\n', " | ");
        let mut err = std::io::stderr().lock();
        let _ = if self.journal {
            writeln!(err, "<{}>{msg}", priority(r.level()))
        } else {
            writeln!(
                err,
                "iomond[{}]: {:<5} {msg}",
                std::process::id(),
                r.level()
            )
        };
    }

    fn flush(&self) {}
}

/// Whether stderr is the journal: `JOURNAL_STREAM` names stderr's device
/// and inode.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Installs the logger. Call once.
pub fn init(target: LogTarget, level: log::LevelFilter) -> Result<(), String> {
    log::set_max_level(level);
    match target {
        LogTarget::Syslog => {
            let formatter = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_DAEMON,
                hostname: None,
                process: "iomond".into(),
                pid: std::process::id(),
            };
            let logger = syslog::unix(formatter)
                .map_err(|e| format!("failed to connect to syslog (/dev/log): {e}"))?;
            log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger)))
                .map_err(|e| e.to_string())
        }
        LogTarget::Stderr | LogTarget::Auto => {
            let journal = target == LogTarget::Auto && stderr_is_journal();
            log::set_boxed_logger(Box::new(Stderr { journal })).map_err(|e| e.to_string())
        }
    }
}

/// Routes libbpf's own messages into `log` (verifier logs at debug).
pub fn route_libbpf() {
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |level, msg| {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => log::debug!("libbpf: {msg}"),
            _ => log::trace!("libbpf: {msg}"),
        }
    })));
}
