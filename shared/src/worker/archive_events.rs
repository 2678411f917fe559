//! An archive read on a thread of its own while the worker stores what it
//! found. Events cross over in batches: one channel message per record made
//! the two threads wake each other for every record, and a short channel made
//! the reader wait whenever the store was busy.

use tokio::sync::mpsc;

use crate::archive::{
    self, ArchiveError, ImportEvent, ReadControl, ReadEnd, ReaderCheckpoint, SinkClosed,
};
use crate::runtime::{self, Thread};
use crate::{stream, Result};

/// A batch is handed over once it holds this many events or bytes. Each
/// hand-over may wake a sleeping thread, which costs a virtual machine
/// dearly: 512 KiB batches (with 1 MiB store batches) took a 200,000-issue
/// import from about 4.6 to 4.1 s of CPU (medians of four) against 128 KiB
/// ones with 256 KiB store batches.
const BATCH_EVENTS: usize = 1024;
const BATCH_BYTES: usize = 512 * 1024;
/// Batches read ahead of the consumer. Four or eight imported no faster
/// than two (the store, not the reader, is behind), and a long import
/// filled them where a short one did not: peak RSS grew with the archive.
const BATCHES_AHEAD: usize = 2;
/// An event this big is sent on its own (see `Batch::push`).
const BIG_EVENT_BYTES: usize = 1024 * 1024;

pub(super) struct ArchiveEvents {
    batches: mpsc::Receiver<Vec<ImportEvent>>,
    current: std::vec::IntoIter<ImportEvent>,
    reader: Thread<std::result::Result<ReadEnd, ArchiveError>>,
}

/// What to read of an archive.
pub(super) enum Reading {
    /// The whole archive, from its start or from a checkpoint (the archive
    /// then starts at its compressed offset), stopping when asked.
    Whole {
        from: Option<Box<ReaderCheckpoint>>,
        control: ReadControl,
    },
    /// Only one relation's records.
    Relation(String),
}

impl ArchiveEvents {
    pub fn read(archive: stream::BlockingReader, limits: archive::Limits, what: Reading) -> Self {
        let (sender, batches) = mpsc::channel(BATCHES_AHEAD);
        let input = archive;
        let reader = runtime::spawn_thread("archive-reader", move || {
            let mut batch = Batch {
                sender,
                events: Vec::new(),
                bytes: 0,
            };
            let mut sink = |event| batch.push(event);
            let end = match &what {
                Reading::Whole { from, control } => {
                    archive::read_archive(input, &limits, from.as_deref(), control, &mut sink)?
                }
                Reading::Relation(relation) => ReadEnd::Complete {
                    version: archive::read_relation(input, &limits, relation, &mut sink)?,
                },
            };
            batch.send().map_err(|_| ArchiveError::Aborted)?;
            Ok(end)
        });
        ArchiveEvents {
            batches,
            current: Vec::new().into_iter(),
            reader,
        }
    }

    pub async fn next(&mut self) -> Option<ImportEvent> {
        loop {
            if let Some(event) = self.current.next() {
                return Some(event);
            }
            self.current = self.batches.recv().await?.into_iter();
        }
    }

    /// Stops reading if the consumer did not reach the end, and tells how
    /// reading went.
    pub async fn finish(self) -> Result<ReadEnd> {
        drop(self.batches);
        Ok(self.reader.join().await??)
    }
}

struct Batch {
    sender: mpsc::Sender<Vec<ImportEvent>>,
    events: Vec<ImportEvent>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, event: ImportEvent) -> std::result::Result<(), SinkClosed> {
        let size = match &event {
            ImportEvent::Record { json, .. } => json.len(),
            ImportEvent::Attributes(json) => json.len(),
            ImportEvent::BlobChunk(chunk) => chunk.len(),
            ImportEvent::BlobStart { .. } | ImportEvent::BlobEnd => 0,
        };
        let big = size >= BIG_EVENT_BYTES;
        if big {
            // A record near the size limit travels alone, and only once the
            // consumer took everything before it: memory holds a few of
            // them at most, not a channel full.
            self.wait_until_taken()?;
        }
        self.bytes += size;
        self.events.push(event);
        if big || self.events.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// Waits (on the reader's own thread) until the channel is empty.
    fn wait_until_taken(&mut self) -> std::result::Result<(), SinkClosed> {
        self.send()?;
        while self.sender.capacity() < self.sender.max_capacity() {
            if self.sender.is_closed() {
                return Err(SinkClosed);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    fn send(&mut self) -> std::result::Result<(), SinkClosed> {
        if self.events.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(BATCH_EVENTS));
        self.sender.blocking_send(events).map_err(|_| SinkClosed)
    }
}
