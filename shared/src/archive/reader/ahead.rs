//! A reader run a few blocks ahead on a thread of its own. Decompressing an
//! archive and checking its records took turns on one thread, and that
//! thread was the import's slowest stage; apart, each has a core while the
//! store writes on another thread.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::Scope;

/// Bytes handed over at a time, and how many such blocks may wait for the
/// reader. With the one it reads and the one being filled, the memory this
/// costs is fixed: `(BLOCKS + 2) × BLOCK_BYTES`, 3 MiB. Each hand-over may
/// wake a thread, dear on a virtual machine: 128 KiB blocks made the import
/// slower than reading in line; 1 MiB blocks made it about 10 % faster
/// (200,000 issues, medians of five alternating runs), and more of them
/// waiting gained nothing.
const BLOCK_BYTES: usize = 1024 * 1024;
const BLOCKS: usize = 1;
const MAX_BLOCKS: usize = BLOCKS + 2;

enum Handed {
    Bytes(Vec<u8>),
    Failed(io::Error),
    End,
}

/// Reads `source` on a thread of `scope`, ahead of the returned reader.
/// Without a thread (none could be started) `source` is read in line.
pub(super) fn read_ahead<'scope, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    source: R,
) -> Ahead<'scope> {
    let (blocks, received) = sync_channel(BLOCKS);
    // Room for every block: giving one back never fails while the thread runs.
    let (returned, recycled) = sync_channel(MAX_BLOCKS);
    let (hand_source, source_given) = sync_channel::<R>(1);
    let started = std::thread::Builder::new()
        .name("archive-inflate".into())
        .spawn_scoped(scope, move || {
            if let Ok(source) = source_given.recv() {
                produce(source, &blocks, &recycled);
            }
        });
    match started {
        Ok(_) => {
            hand_source
                .send(source)
                .expect("the thread waits for its source");
            Ahead::Thread(Consumer {
                blocks: received,
                returned,
                current: Vec::new(),
                pos: 0,
                ended: false,
            })
        }
        Err(err) => {
            tracing::warn!(error = %err, "no thread to decompress on: reading in line");
            Ahead::InLine(Box::new(source))
        }
    }
}

/// Fills blocks until the source ends or fails, or the reader is gone.
fn produce(mut source: impl Read, blocks: &SyncSender<Handed>, recycled: &Receiver<Vec<u8>>) {
    let mut made = 0;
    loop {
        let mut block = match recycled.try_recv() {
            Ok(block) => block,
            Err(_) if made < MAX_BLOCKS => {
                made += 1;
                Vec::with_capacity(BLOCK_BYTES)
            }
            // Every block is out: wait for one to come back.
            Err(_) => match recycled.recv() {
                Ok(block) => block,
                Err(_) => return,
            },
        };
        block.clear();
        let failure = fill(&mut source, &mut block).err();
        let ended = block.is_empty();
        // The bytes read before a failure go first, as in line.
        if !ended && blocks.send(Handed::Bytes(block)).is_err() {
            return;
        }
        if let Some(err) = failure {
            let _ = blocks.send(Handed::Failed(err));
            return;
        }
        if ended {
            let _ = blocks.send(Handed::End);
            return;
        }
    }
}

/// Reads into `block` up to its capacity, or less at the end or at a
/// failure (the bytes read before it stay in `block`).
fn fill(source: &mut impl Read, block: &mut Vec<u8>) -> io::Result<()> {
    let capacity = block.capacity();
    block.resize(capacity, 0);
    let mut filled = 0;
    let outcome = loop {
        if filled == capacity {
            break Ok(());
        }
        match source.read(&mut block[filled..]) {
            Ok(0) => break Ok(()),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break Err(err),
        }
    };
    block.truncate(filled);
    outcome
}

pub(super) enum Ahead<'scope> {
    Thread(Consumer),
    InLine(Box<dyn Read + 'scope>),
}

pub(super) struct Consumer {
    blocks: Receiver<Handed>,
    returned: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for Ahead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Ahead::Thread(consumer) => consumer.read(buf),
            Ahead::InLine(source) => source.read(buf),
        }
    }
}

impl Read for Consumer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            let done = std::mem::take(&mut self.current);
            if done.capacity() > 0 {
                // The thread may be gone; then the block is simply freed.
                let _ = self.returned.try_send(done);
            }
            self.pos = 0;
            match self.blocks.recv() {
                Ok(Handed::Bytes(block)) => self.current = block,
                Ok(Handed::End) => self.ended = true,
                Ok(Handed::Failed(err)) => {
                    self.ended = true;
                    return Err(err);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the decompressing thread stopped"));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(source: impl Read + Send, chunk: usize) -> io::Result<Vec<u8>> {
        std::thread::scope(|scope| {
            let mut ahead = read_ahead(scope, source);
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = ahead.read(&mut buf)?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
    }

    #[test]
    fn gives_every_byte_in_order() {
        let bytes: Vec<u8> = (0..BLOCK_BYTES * 9 + 17).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 511, 4096, BLOCK_BYTES + 3] {
            let source = bytes.chunks(1000).flatten().copied().collect::<Vec<_>>();
            assert_eq!(read_all(source.as_slice(), chunk).unwrap(), bytes);
        }
        assert_eq!(read_all(&b""[..], 10).unwrap(), b"");
    }

    /// Fails after giving `good` bytes.
    struct FailsAfter {
        good: usize,
    }

    impl Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "broken member"));
            }
            let n = buf.len().min(self.good);
            buf[..n].fill(b'x');
            self.good -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_failure_reaches_the_reader_after_the_bytes_before_it() {
        let err = read_all(
            FailsAfter {
                good: BLOCK_BYTES * 3 + 5,
            },
            4096,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "broken member");
        std::thread::scope(|scope| {
            let mut ahead = read_ahead(scope, FailsAfter { good: 10 });
            let mut buf = [0u8; 64];
            assert_eq!(ahead.read(&mut buf).unwrap(), 10);
            assert!(ahead.read(&mut buf).is_err());
        });
    }

    #[test]
    fn a_reader_that_stops_early_stops_the_thread() {
        // An endless source: the scope only ends if the thread does.
        std::thread::scope(|scope| {
            let mut ahead = read_ahead(scope, io::repeat(7));
            let mut buf = [0u8; 100];
            ahead.read_exact(&mut buf).unwrap();
            assert_eq!(buf, [7u8; 100]);
        });
    }
}
