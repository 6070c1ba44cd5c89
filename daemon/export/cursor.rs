//! Where the exporter is: the last Sample BanyanDB acknowledged, kept in
//! a file of the state directory so that a restart resumes from it.
//!
//! Written as a new file, synced, then renamed over the old one: a crash
//! leaves the old cursor or the new, never half of one. One line of text
//! (`<start ms> <end ms> <endpoint-independent group>`), so an operator
//! can read it, or delete it to send the whole history again.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The last Sample acknowledged: its start (the store's key) and end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub start_ms: u64,
    pub end_ms: u64,
    /// The group it was written to: a cursor of another group is not ours.
    pub group: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cannot write the export cursor {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("export-banyandb.cursor")
}

impl Cursor {
    /// The cursor kept for `group`; `None` when there is none (or it is
    /// unreadable, or for another group: logged, then started afresh).
    pub fn load(file: &Path, group: &str) -> Option<Cursor> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                log::warn!(
                    "export: cannot read the cursor {} ({e}); sending what the history holds",
                    file.display()
                );
                return None;
            }
        };
        let mut it = text.split_whitespace();
        let parsed = (|| {
            let start_ms = it.next()?.parse().ok()?;
            let end_ms = it.next()?.parse().ok()?;
            let g = it.next()?.to_string();
            Some(Cursor {
                start_ms,
                end_ms,
                group: g,
            })
        })();
        match parsed {
            Some(c) if c.group == group => Some(c),
            Some(c) => {
                log::info!(
                    "export: the cursor {} is for group {:?}, not {group:?}; sending what the history holds",
                    file.display(),
                    c.group
                );
                None
            }
            None => {
                log::warn!(
                    "export: the cursor {} is not readable ({:?}); sending what the history holds",
                    file.display(),
                    text.chars().take(80).collect::<String>()
                );
                None
            }
        }
    }

    pub fn save(&self, file: &Path) -> Result<(), CursorError> {
        let tmp = file.with_extension("cursor.tmp");
        let err = |source| CursorError::Write {
            path: file.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        writeln!(f, "{} {} {}", self.start_ms, self.end_ms, self.group).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, file).map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_cursor_loads_back_for_its_group_only() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path());
        assert_eq!(Cursor::load(&p, "iomon"), None);
        let c = Cursor {
            start_ms: 10,
            end_ms: 20,
            group: "iomon".into(),
        };
        c.save(&p).unwrap();
        assert_eq!(Cursor::load(&p, "iomon"), Some(c));
        assert_eq!(Cursor::load(&p, "other"), None);
        std::fs::write(&p, "garbage").unwrap();
        assert_eq!(Cursor::load(&p, "iomon"), None);
    }
}
