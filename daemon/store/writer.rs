//! Commits off the event loop. A durable commit waits for the disk (an
//! fsync, a few ms on a quiet disk, tens on a busy one), and retention may
//! commit again: on the loop's thread every request that met a flush
//! waited for it. The loop hands what is queued to this thread and goes on
//! serving; the outcome comes back at a later loop turn.
//!
//! One commit is in flight at a time, and only this thread writes while
//! it is, so the ledger it was handed is exact. Compaction and reopening
//! after an I/O error need the database to themselves: the store does them
//! on its own thread between commits (the thread holds no reference then).

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, Durability};

use super::retention::Retention;
use super::{db_err, Entry, Ledger, StoreError, Tier};

/// Writes `entries` in one durable transaction and adds them to the
/// ledger.
pub(super) fn write(
    db: &Database,
    entries: &[Entry],
    ledger: &mut Ledger,
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().map_err(db_err)?;
    tx.set_durability(Durability::Immediate).map_err(db_err)?;
    let mut added = 0u64;
    let mut counts = [0u64; 3];
    for tier in Tier::ALL {
        let mut t = tx.open_table(tier.table()).map_err(db_err)?;
        for (_, ms, value) in entries.iter().filter(|(t, _, _)| *t == tier) {
            let old = t.insert(*ms, value.as_slice()).map_err(db_err)?;
            match old {
                Some(old) => {
                    added = (added + value.len() as u64).saturating_sub(old.value().len() as u64)
                }
                None => {
                    added += 8 + value.len() as u64;
                    counts[tier as usize] += 1;
                }
            }
        }
    }
    tx.commit().map_err(db_err)?;
    ledger.live_bytes += added;
    for (c, n) in ledger.counts.iter_mut().zip(counts) {
        *c += n;
    }
    Ok(())
}

/// A flush: entries to write, then retention.
pub(super) struct Job {
    pub db: Arc<Database>,
    pub entries: Arc<Vec<Entry>>,
    pub retention: Retention,
    pub ledger: Ledger,
}

/// What a flush did: the ledger after it, and what failed.
pub(super) struct Outcome {
    pub ledger: Ledger,
    pub written: Result<(), StoreError>,
    /// Not tried when the write failed.
    pub retained: Result<(), StoreError>,
}

impl Job {
    /// Runs on whatever thread calls it; the database reference is dropped
    /// before it returns.
    pub(super) fn run(self) -> Outcome {
        let Job {
            db,
            entries,
            retention,
            mut ledger,
        } = self;
        let written = if entries.is_empty() {
            Ok(())
        } else {
            write(&db, &entries, &mut ledger)
        };
        let retained = match written {
            Ok(()) => retention.apply(&db, &mut ledger),
            Err(_) => Ok(()),
        };
        drop(db);
        Outcome {
            ledger,
            written,
            retained,
        }
    }
}

/// The thread and its two channels.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    outcomes: mpsc::Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    busy: bool,
}

impl Writer {
    pub(super) fn start() -> std::io::Result<Writer> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, outcomes) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("iomond-store".into())
            .spawn(move || {
                for job in rx {
                    if tx.send(job.run()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Writer {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
            busy: false,
        })
    }

    /// Whether a commit is in flight.
    pub(super) fn busy(&self) -> bool {
        self.busy
    }

    /// Hands a job over; given back when the thread is gone.
    pub(super) fn submit(&mut self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(s) => match s.send(job) {
                Ok(()) => {
                    self.busy = true;
                    Ok(())
                }
                Err(mpsc::SendError(job)) => Err(job),
            },
            None => Err(job),
        }
    }

    /// The outcome of the commit in flight, if it is done (`Err`: the
    /// thread is gone, and the commit with it).
    pub(super) fn done(&mut self) -> Option<Result<Outcome, StoreError>> {
        if !self.busy {
            return None;
        }
        let r = match self.outcomes.try_recv() {
            Ok(o) => Ok(o),
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => Err(StoreError::WriterGone),
        };
        self.busy = false;
        Some(r)
    }

    /// Waits for the commit in flight, if there is one.
    pub(super) fn wait(&mut self) -> Option<Result<Outcome, StoreError>> {
        if !self.busy {
            return None;
        }
        self.busy = false;
        Some(self.outcomes.recv().map_err(|_| StoreError::WriterGone))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the job it has.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
