//! Opening the store whatever state it is in: a database another process
//! holds is waited for, then refused; one that will not open or carries
//! another format is moved aside (never deleted) and a fresh one started;
//! after an I/O error the database is reopened before writing again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{Database, ReadableTable};

use super::{Store, StoreError, FILE, FORMAT_VERSION, META, TABLES};

enum OpenFailure {
    /// Garbage, truncated, or another format: move it aside.
    Unreadable(String),
    /// Another process holds the lock.
    Locked,
    /// Permissions, disk errors: moving would not help.
    Fatal(redb::Error),
}

impl OpenFailure {
    fn classify<E: Into<redb::Error>>(e: E) -> OpenFailure {
        let e: redb::Error = e.into();
        match e {
            redb::Error::DatabaseAlreadyOpen => OpenFailure::Locked,
            redb::Error::Corrupted(_)
            | redb::Error::UpgradeRequired(_)
            | redb::Error::TableTypeMismatch { .. } => {
                OpenFailure::Unreadable(format!("redb: {e}"))
            }
            redb::Error::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                OpenFailure::Unreadable(format!("redb: {e}"))
            }
            other => OpenFailure::Fatal(other),
        }
    }
}

impl Store {
    /// `Ok(Ok(db))`, `Ok(Err(why))` when the database is unreadable and
    /// should be moved aside, or `Err` for what moving would not fix. A lock
    /// held by a process that is going away (a restart) is waited for.
    pub(super) fn open_retrying(dir: &Path) -> Result<Result<Database, String>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Self::try_open(dir) {
                Err(OpenFailure::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(OpenFailure::Locked) => return Err(StoreError::Locked(dir.to_path_buf())),
                Err(OpenFailure::Fatal(source)) => {
                    return Err(StoreError::Open {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
                Err(OpenFailure::Unreadable(why)) => return Ok(Err(why)),
                Ok(db) => return Ok(Ok(db)),
            }
        }
    }

    fn try_open(dir: &Path) -> Result<Database, OpenFailure> {
        let path = dir.join(FILE);
        let fresh = !path.exists();
        // A directory that holds other things but no database is not ours
        // to write into quietly.
        if fresh
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            return Err(OpenFailure::Unreadable(format!(
                "it has files but no {FILE}"
            )));
        }
        let db = Database::builder()
            .set_cache_size(4 << 20)
            .create(&path)
            .map_err(OpenFailure::classify)?;
        let tx = db.begin_write().map_err(OpenFailure::classify)?;
        {
            let mut meta = tx.open_table(META).map_err(OpenFailure::classify)?;
            let version = meta
                .get("format_version")
                .map_err(OpenFailure::classify)?
                .map(|v| v.value());
            match version {
                None if fresh => {
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(OpenFailure::classify)?;
                }
                None => return Err(OpenFailure::Unreadable("it has no format version".into())),
                Some(v) if v == FORMAT_VERSION => {}
                Some(v) => {
                    return Err(OpenFailure::Unreadable(format!(
                        "format version {v}, this iomond reads {FORMAT_VERSION}"
                    )))
                }
            }
            for t in TABLES {
                tx.open_table(t).map_err(OpenFailure::classify)?;
            }
        }
        tx.commit().map_err(OpenFailure::classify)?;
        Ok(db)
    }

    pub(super) fn try_reopen(&mut self) -> bool {
        if !self.reopen {
            return true;
        }
        // redb refuses writes after an I/O error until it is reopened.
        let path = self.dir.join(FILE);
        let placeholder = match tempfile_db() {
            Some(db) => db,
            None => return false,
        };
        drop(std::mem::replace(
            &mut self.db,
            std::sync::Arc::new(placeholder),
        ));
        match Database::builder().set_cache_size(4 << 20).create(&path) {
            Ok(db) => {
                self.db = std::sync::Arc::new(db);
                self.reopen = false;
                let _ = self.scan();
                true
            }
            Err(_) => false,
        }
    }
}

pub(super) fn tempfile_db() -> Option<Database> {
    Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .ok()
}

pub(super) fn aside_path(dir: &Path) -> PathBuf {
    let stamp = crate::units::now_ms() / 1000;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let mut p = dir.with_file_name(format!("{name}.unreadable-{stamp}"));
    let mut i = 1;
    while p.exists() {
        p = dir.with_file_name(format!("{name}.unreadable-{stamp}.{i}"));
        i += 1;
    }
    p
}
