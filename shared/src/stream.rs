//! Byte streams between async storage and the blocking archive code, always
//! in bounded chunks so that no archive is ever held whole in memory.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

pub type BorrowedStream<'a> = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;
pub type ByteStream = BorrowedStream<'static>;

/// A blocking reader, for a thread of its own.
pub type BlockingReader = Box<dyn Read + Send>;

/// The bytes `reader` gives, counted as they pass (an import's archive
/// size, for its metrics, without asking the store).
pub fn counted(reader: BlockingReader) -> (BlockingReader, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let reader = Counted {
        inner: reader,
        count: count.clone(),
    };
    (Box::new(reader), count)
}

struct Counted {
    inner: BlockingReader,
    count: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The least a client's stream must keep up: at least `min_bytes` in every
/// `window` after the first (Apache's `mod_reqtimeout` `minrate`, as a
/// sliding window: bytes sent early buy no idle time later).
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    pub window: Duration,
    pub min_bytes: u64,
}

impl MinRate {
    /// 1 KiB/s averaged over 30 s.
    pub const CLIENT_BODY: MinRate = MinRate {
        window: Duration::from_secs(30),
        min_bytes: 30 * 1024,
    };
}

/// The window in slots, so that old bytes leave it a slot at a time.
const RATE_SLOTS: usize = 30;

/// Bytes received per slot of the window.
struct RateMeter {
    started: tokio::time::Instant,
    slot: Duration,
    slots: [u64; RATE_SLOTS],
    /// The slot (counted from the start) the newest bytes are in.
    at: u64,
}

impl RateMeter {
    fn new(rate: &MinRate) -> Self {
        RateMeter {
            started: tokio::time::Instant::now(),
            slot: (rate.window / RATE_SLOTS as u32).max(Duration::from_millis(1)),
            slots: [0; RATE_SLOTS],
            at: 0,
        }
    }

    fn advance(&mut self) {
        let now = (self.started.elapsed().as_nanos() / self.slot.as_nanos()) as u64;
        if now - self.at >= RATE_SLOTS as u64 {
            self.slots = [0; RATE_SLOTS];
        } else {
            for at in self.at + 1..=now {
                self.slots[at as usize % RATE_SLOTS] = 0;
            }
        }
        self.at = now;
    }

    fn add(&mut self, bytes: usize) {
        self.advance();
        self.slots[self.at as usize % RATE_SLOTS] += bytes as u64;
    }

    fn behind(&mut self, rate: &MinRate) -> bool {
        self.advance();
        self.started.elapsed() >= rate.window && self.slots.iter().sum::<u64>() < rate.min_bytes
    }
}

/// `stream`, failing with `TimedOut` (and calling `on_cut`) once it falls
/// behind `rate`, checked as bytes arrive and once a slot while none do.
pub fn min_rate<S, E>(
    stream: S,
    rate: MinRate,
    on_cut: impl Fn() + Send + Sync + 'static,
) -> ByteStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let meter = RateMeter::new(&rate);
    let tick = Box::pin(tokio::time::sleep(meter.slot));
    let on_cut = Arc::new(on_cut);
    let state = (Box::pin(stream), meter, tick, false);
    let stream = futures::stream::unfold(state, move |(mut body, mut meter, mut tick, ended)| {
        let rate = rate;
        let cut = move |meter: &RateMeter| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "fewer than {} bytes arrived in {} s",
                    rate.min_bytes,
                    meter.slot.as_secs_f64() * RATE_SLOTS as f64
                ),
            )
        };
        let on_cut = on_cut.clone();
        async move {
            if ended {
                return None;
            }
            loop {
                tokio::select! {
                    item = body.next() => {
                        let item = match item? {
                            Ok(chunk) => chunk,
                            Err(err) => {
                                let err = io::Error::other(err.to_string());
                                return Some((Err(err), (body, meter, tick, true)));
                            }
                        };
                        meter.add(item.len());
                        if meter.behind(&rate) {
                            on_cut();
                            let err = cut(&meter);
                            return Some((Err(err), (body, meter, tick, true)));
                        }
                        return Some((Ok(item), (body, meter, tick, false)));
                    }
                    () = &mut tick => {
                        if meter.behind(&rate) {
                            on_cut();
                            let err = cut(&meter);
                            return Some((Err(err), (body, meter, tick, true)));
                        }
                        let next = tokio::time::Instant::now() + meter.slot;
                        tick.as_mut().reset(next);
                    }
                }
            }
        }
    });
    Box::pin(stream)
}

/// How many bytes travel together between the archive thread and storage.
pub const CHUNK: usize = 256 * 1024;

pub fn from_bytes(bytes: impl Into<Bytes>) -> ByteStream {
    let bytes = bytes.into();
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

pub fn from_receiver(rx: mpsc::Receiver<io::Result<Bytes>>) -> ByteStream {
    Box::pin(
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .fuse(),
    )
}

/// `stream` without its first `bytes` bytes.
pub fn skip(stream: ByteStream, bytes: u64) -> ByteStream {
    let mut left = bytes;
    Box::pin(stream.try_filter_map(move |chunk| {
        let dropped = left.min(chunk.len() as u64) as usize;
        left -= dropped as u64;
        futures::future::ready(Ok((dropped < chunk.len()).then(|| chunk.slice(dropped..))))
    }))
}

/// Reads a whole stream; for small blobs and tests only.
pub async fn collect(mut stream: ByteStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

// Every stream made here is fused: consumers (S3 part readers, decoders
// looking for another member) may poll again after the end.

/// A blocking `Read` over an async stream, for use on a blocking thread.
pub fn blocking_reader(stream: ByteStream) -> impl Read + Send {
    let handle = tokio::runtime::Handle::current();
    // Readers may read again after the end (a decoder checking for more
    // members); a fused stream answers that instead of panicking.
    let stream = stream.fuse();
    tokio_util::io::SyncIoBridge::new_with_handle(tokio_util::io::StreamReader::new(stream), handle)
}

/// A blocking `Write` whose bytes come out of the returned stream. The
/// stream ends cleanly only after `finish`; a writer dropped without it (a
/// failed or panicked producer) ends the stream with an error, so a consumer
/// never mistakes half an archive for a whole one.
pub fn blocking_writer() -> (ChannelWriter, ByteStream) {
    let (tx, rx) = mpsc::channel(4);
    let finished = Arc::new(AtomicBool::new(false));
    let seen_finished = finished.clone();
    let stream = futures::stream::unfold(Some(rx), move |rx| {
        let seen_finished = seen_finished.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(item) => Some((item, Some(rx))),
                None if seen_finished.load(Ordering::Acquire) => None,
                None => Some((
                    Err(io::Error::other(
                        "the producer stopped before the end of the stream",
                    )),
                    None,
                )),
            }
        }
    });
    (
        ChannelWriter {
            tx,
            pieces: Pieces::new(CHUNK),
            finished,
        },
        Box::pin(stream.fuse()),
    )
}

pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    pieces: Pieces,
    finished: Arc<AtomicBool>,
}

impl ChannelWriter {
    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the consumer went away"))
    }

    pub fn finish(mut self) -> io::Result<()> {
        if let Some(rest) = self.pieces.rest() {
            self.send(rest)?;
        }
        self.finished.store(true, Ordering::Release);
        Ok(())
    }
}

impl Write for ChannelWriter {
    /// Takes only what fits in the current piece (`write_all` sends the rest).
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (taken, full) = self.pieces.push(data);
        if let Some(chunk) = full {
            self.send(chunk)?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes gathered into pieces of one size, each allocated at exactly that
/// size. Buffers sized to their content, or grown by doubling, left glibc's
/// heap fragmented, so peak RSS grew with the project (`bench/run.py`'s
/// flatness line).
pub struct Pieces {
    piece: BytesMut,
    size: usize,
}

impl Pieces {
    pub fn new(size: usize) -> Self {
        Pieces {
            piece: BytesMut::with_capacity(size),
            size,
        }
    }

    /// Appends as much of `bytes` as fits in the current piece. Returns how
    /// much it took, and the piece once it is full.
    pub fn push(&mut self, bytes: &[u8]) -> (usize, Option<Bytes>) {
        let taken = bytes.len().min(self.size - self.piece.len());
        self.piece.extend_from_slice(&bytes[..taken]);
        let full = (self.piece.len() == self.size).then(|| {
            std::mem::replace(&mut self.piece, BytesMut::with_capacity(self.size)).freeze()
        });
        (taken, full)
    }

    /// What is gathered so far, unless nothing is: the last piece.
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.piece.is_empty()).then(|| self.piece.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(pause: Duration, bytes: usize) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures::stream::unfold((), move |()| async move {
            tokio::time::sleep(pause).await;
            Some((Ok(Bytes::from(vec![b'x'; bytes])), ()))
        })
    }

    #[tokio::test]
    async fn a_stream_below_the_rate_is_cut_and_one_above_goes_on() {
        let rate = MinRate {
            window: Duration::from_millis(300),
            min_bytes: 300,
        };
        // A byte every 20 ms (50 bytes/s against 1,000): cut after a window.
        let flagged = Arc::new(AtomicBool::new(false));
        let flag = flagged.clone();
        let started = tokio::time::Instant::now();
        let mut slow = min_rate(every(Duration::from_millis(20), 1), rate, move || {
            flag.store(true, Ordering::SeqCst)
        });
        let failure = loop {
            match slow.next().await.expect("the stream goes on until cut") {
                Ok(_) => continue,
                Err(err) => break err,
            }
        };
        assert_eq!(failure.kind(), io::ErrorKind::TimedOut);
        assert!(flagged.load(Ordering::SeqCst));
        assert!(started.elapsed() >= rate.window);
        assert!(
            started.elapsed() < rate.window * 3,
            "{:?}",
            started.elapsed()
        );
        assert!(slow.next().await.is_none(), "nothing after the cut");

        // A stall with nothing arriving is cut too, at the window's end.
        let mut stalled = min_rate(every(Duration::from_secs(3600), 1), rate, || {});
        let started = tokio::time::Instant::now();
        assert!(stalled.next().await.unwrap().is_err());
        assert!(started.elapsed() < rate.window * 2);

        // 100 bytes every 20 ms keeps well above it.
        let fast = min_rate(every(Duration::from_millis(20), 100), rate, || {});
        let items: Vec<_> = fast.take(40).collect().await;
        assert!(items.iter().all(Result::is_ok));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unfinished_writer_ends_stream_with_error() {
        let (mut writer, stream) = blocking_writer();
        let producer = tokio::task::spawn_blocking(move || {
            writer.write_all(&[1u8; 1000]).unwrap();
            drop(writer);
        });
        let result = collect(stream).await;
        producer.await.unwrap();
        assert!(result.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_chunks_stay_within_the_chunk_size() {
        let (mut writer, mut stream) = blocking_writer();
        let producer = tokio::task::spawn_blocking(move || {
            // Pieces that do not divide the chunk size straddle its end.
            for _ in 0..20 {
                writer.write_all(&[3u8; 70_000]).unwrap();
            }
            writer.finish().unwrap();
        });
        let mut sizes = Vec::new();
        while let Some(chunk) = stream.next().await {
            sizes.push(chunk.unwrap().len());
        }
        producer.await.unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 1_400_000);
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&n| n == CHUNK),
            "{sizes:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_writer_delivers_everything() {
        let (mut writer, stream) = blocking_writer();
        let producer = tokio::task::spawn_blocking(move || {
            for _ in 0..10 {
                writer.write_all(&[7u8; 100_000]).unwrap();
            }
            writer.finish().unwrap();
        });
        let bytes = collect(stream).await.unwrap();
        producer.await.unwrap();
        assert_eq!(bytes.len(), 1_000_000);
        let mut back = Vec::new();
        let (mut w, s) = blocking_writer();
        let p = tokio::task::spawn_blocking(move || {
            w.write_all(b"hello").unwrap();
            w.finish().unwrap();
        });
        let reader_stream = s;
        tokio::task::spawn_blocking(move || {
            let mut r = blocking_reader(reader_stream);
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"hello");
        })
        .await
        .unwrap();
        p.await.unwrap();
    }
}
