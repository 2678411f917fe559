//! gzip compressed on several threads, as pigz does it: the input is cut
//! into pieces of `PIECE_BYTES`; each is deflated on a thread of a small
//! pool, primed with the last 32 KiB of the piece before it (so the ratio is
//! that of one stream) and ended with a sync flush at a byte boundary, so
//! that the pieces, written in order behind one gzip header, are one deflate
//! stream; the trailer's CRC-32 is combined from the pieces'. The result is
//! one ordinary gzip member: `gzip -t`, `tar -xzf`, Python's `tarfile` even
//! in stream mode (which reads only a first member), GitLab's importer and
//! ours read it. One compressing thread was the export's ceiling on a
//! machine of several cores.
//!
//! Memory is bounded: at most `threads + 1` pieces are out at once, so an
//! encoder holds about `(threads + 2) × PIECE_BYTES` whatever it writes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crc32fast::Hasher;
use flate2::{Compress, Compression, FlushCompress, Status};

use super::slices::{Slice, SliceSum};

/// Input bytes per piece.
pub const PIECE_BYTES: usize = 1024 * 1024;

/// What deflate can refer back to: the window a piece is primed with.
const WINDOW: usize = 32 * 1024;

/// Compressing threads: the machine's cores, at most this many.
const MAX_THREADS: usize = 4;

/// gzip's header (RFC 1952): deflate, no name, no time, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Buffers handed back for reuse. Each piece's buffers are allocated on
/// one thread and freed on another; fresh ones each time left glibc's heaps
/// growing with the archive (export peak RSS +27 % from 10,000 to 200,000
/// issues), so a few are allocated once and passed around.
#[derive(Clone, Default)]
struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    fn take(&self, capacity: usize) -> Vec<u8> {
        let spare = self.0.lock().ok().and_then(|mut spare| spare.pop());
        let mut buffer = spare.unwrap_or_default();
        buffer.clear();
        buffer.reserve(capacity);
        buffer
    }

    fn give(&self, buffer: Vec<u8>) {
        if let Ok(mut spare) = self.0.lock() {
            if spare.len() < 2 * MAX_THREADS + 4 {
                spare.push(buffer);
            }
        }
    }
}

struct Piece {
    n: u64,
    data: Vec<u8>,
    /// The end of the piece before it.
    primer: Vec<u8>,
    last: bool,
}

struct Deflated {
    n: u64,
    out: io::Result<Vec<u8>>,
    crc: Hasher,
}

/// Writes one gzip stream into `out`; `finish` ends it and returns `out`.
pub struct ParallelGzEncoder<W: Write> {
    out: Option<W>,
    piece: Vec<u8>,
    /// The end of the last piece sent: the next one's primer.
    tail: Vec<u8>,
    pieces: Option<SyncSender<Piece>>,
    deflated: Receiver<Deflated>,
    threads: Vec<JoinHandle<()>>,
    /// Numbers of the next piece to send and of the next to write.
    sent: u64,
    written: u64,
    /// Pieces that came back before the ones ahead of them.
    early: BTreeMap<u64, (Vec<u8>, Hasher)>,
    max_out: u64,
    buffers: Buffers,
    crc: Hasher,
    length: u64,
    slice: Slice,
    /// Threads counted in `THREADS_IN_USE` for this encoder.
    claimed: usize,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(out: W, level: u32) -> Self {
        Self::slice(out, level, Slice::Whole)
    }

    pub fn with_threads(out: W, level: u32, threads: usize) -> Self {
        Self::slice_with_threads(out, level, threads, Slice::Whole)
    }

    /// One slice of a stream other encoders write the rest of; `finish_slice`
    /// ends it.
    pub fn slice(out: W, level: u32, slice: Slice) -> Self {
        let threads = claim_threads();
        let mut encoder = Self::slice_with_threads(out, level, threads, slice);
        encoder.claimed = threads;
        encoder
    }

    pub fn slice_with_threads(out: W, level: u32, threads: usize, slice: Slice) -> Self {
        let threads = threads.max(1);
        let (pieces, inbox) = sync_channel::<Piece>(threads);
        let (done, deflated) = sync_channel::<Deflated>(threads + 1);
        let inbox = Arc::new(Mutex::new(inbox));
        let level = Compression::new(level);
        let buffers = Buffers::default();
        let threads = (0..threads)
            .map(|n| {
                let (inbox, done, buffers) = (inbox.clone(), done.clone(), buffers.clone());
                std::thread::Builder::new()
                    .name(format!("gzip-{n}"))
                    .spawn(move || deflate_pieces(&inbox, &done, &buffers, level))
                    .expect("a compressing thread")
            })
            .collect::<Vec<_>>();
        let max_out = threads.len() as u64 + 1;
        ParallelGzEncoder {
            out: Some(out),
            piece: buffers.take(PIECE_BYTES),
            tail: Vec::new(),
            pieces: Some(pieces),
            deflated,
            threads,
            sent: 0,
            written: 0,
            early: BTreeMap::new(),
            max_out,
            buffers,
            crc: Hasher::new(),
            length: 0,
            slice,
            claimed: 0,
        }
    }

    /// Ends the stream (its last piece, then the trailer) and returns the
    /// output.
    pub fn finish(mut self) -> io::Result<W> {
        debug_assert_eq!(self.slice, Slice::Whole);
        let (mut out, sum) = self.drain(true)?;
        out.write_all(&sum.crc.to_le_bytes())?;
        // ISIZE: the input's length modulo 2^32.
        out.write_all(&(sum.length as u32).to_le_bytes())?;
        out.flush()?;
        Ok(out)
    }

    /// Ends a slice at a byte boundary; returns the output and what the
    /// slice adds to the stream's trailer.
    pub fn finish_slice(mut self) -> io::Result<(W, SliceSum)> {
        debug_assert_ne!(self.slice, Slice::Whole);
        let (mut out, sum) = self.drain(false)?;
        out.flush()?;
        Ok((out, sum))
    }

    /// Sends the last piece and writes every piece still out.
    fn drain(&mut self, last: bool) -> io::Result<(W, SliceSum)> {
        self.send_piece(last)?;
        while self.written < self.sent {
            self.write_next()?;
        }
        self.pieces = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let out = self.out.take().expect("finished once");
        let crc = std::mem::take(&mut self.crc).finalize();
        Ok((
            out,
            SliceSum {
                crc,
                length: self.length,
            },
        ))
    }

    fn send_piece(&mut self, last: bool) -> io::Result<()> {
        while self.sent - self.written >= self.max_out {
            self.write_next()?;
        }
        let next = if last {
            Vec::new()
        } else {
            self.buffers.take(PIECE_BYTES)
        };
        let data = std::mem::replace(&mut self.piece, next);
        let mut tail = self.buffers.take(WINDOW);
        tail.extend_from_slice(&data[data.len().saturating_sub(WINDOW)..]);
        let primer = std::mem::replace(&mut self.tail, tail);
        self.length += data.len() as u64;
        let piece = Piece {
            n: self.sent,
            data,
            primer,
            last,
        };
        self.pieces
            .as_ref()
            .expect("open until finished")
            .send(piece)
            .map_err(|_| stopped())?;
        self.sent += 1;
        Ok(())
    }

    /// Waits for the piece due next and writes it.
    fn write_next(&mut self) -> io::Result<()> {
        let (bytes, crc) = loop {
            if let Some(ready) = self.early.remove(&self.written) {
                break ready;
            }
            let Deflated { n, out, crc } = self.deflated.recv().map_err(|_| stopped())?;
            let out = out?;
            if n == self.written {
                break (out, crc);
            }
            self.early.insert(n, (out, crc));
        };
        let out = self.out.as_mut().expect("open until finished");
        let header = matches!(self.slice, Slice::Whole | Slice::Open { first: true });
        if self.written == 0 && header {
            out.write_all(&HEADER)?;
        }
        out.write_all(&bytes)?;
        self.buffers.give(bytes);
        self.crc.combine(&crc);
        self.written += 1;
        Ok(())
    }
}

/// Compressing threads the process's encoders hold: encoders at work at
/// once (the slices of an export on a server's workers) share the cores
/// rather than each starting one thread per core, which left more threads
/// than cores and a deflate state and pieces in flight for each.
static THREADS_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The cores one encoder compresses on: the machine's, at most
/// `MAX_THREADS`.
fn encoder_cores() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
}

/// Whether one encoder already compresses on every core of this machine:
/// then encoders at work at once (an export's slices on one server's
/// workers) only share the same cores, and slicing gains no speed.
pub fn one_encoder_takes_every_core() -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) <= encoder_cores()
}

/// The cores (at most `MAX_THREADS`) that other encoders do not hold, one
/// at least.
fn claim_threads() -> usize {
    let cores = encoder_cores();
    let free = cores.saturating_sub(THREADS_IN_USE.load(Ordering::Relaxed));
    let threads = free.max(1);
    THREADS_IN_USE.fetch_add(threads, Ordering::Relaxed);
    threads
}

fn stopped() -> io::Error {
    io::Error::other("the gzip compressors stopped")
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = (PIECE_BYTES - self.piece.len()).min(buf.len());
        self.piece.extend_from_slice(&buf[..taken]);
        if self.piece.len() == PIECE_BYTES {
            self.send_piece(false)?;
        }
        Ok(taken)
    }

    /// Pieces are written whole, in order: nothing waits to be flushed.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzEncoder<W> {
    fn drop(&mut self) {
        THREADS_IN_USE.fetch_sub(self.claimed, Ordering::Relaxed);
        // Unfinished (an error on the way): stop the threads, write nothing.
        // Closing `pieces` ends their loops; draining `deflated` until every
        // thread has dropped its sender frees one blocked on a full channel.
        self.pieces = None;
        while self.deflated.recv().is_ok() {}
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn deflate_pieces(
    inbox: &Mutex<Receiver<Piece>>,
    done: &SyncSender<Deflated>,
    buffers: &Buffers,
    level: Compression,
) {
    // One deflate state per thread, reset for each piece: a fresh one per
    // piece was a few hundred KiB allocated and freed each time.
    let mut deflate = Compress::new(level, false);
    loop {
        let next = inbox.lock().map(|inbox| inbox.recv());
        let Ok(Ok(piece)) = next else { return };
        let mut crc = Hasher::new();
        crc.update(&piece.data);
        let out = buffers.take(piece.data.len() / 2 + 1024);
        let out = deflate_piece(&mut deflate, &piece, out);
        deflate.reset();
        let Piece {
            n, data, primer, ..
        } = piece;
        buffers.give(data);
        buffers.give(primer);
        if done.send(Deflated { n, out, crc }).is_err() {
            return;
        }
    }
}

/// The piece as raw deflate: ended at a byte boundary by a sync flush, so
/// the next piece's deflate can follow it, or by the final block.
fn deflate_piece(deflate: &mut Compress, piece: &Piece, mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    if !piece.primer.is_empty() {
        deflate
            .set_dictionary(&piece.primer)
            .map_err(io::Error::other)?;
    }
    let flush = if piece.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let read = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&piece.data[read..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_read = deflate.total_in() as usize == piece.data.len();
        // zlib's rule: a flush is complete once a call left output room.
        let done = match status {
            Status::StreamEnd => true,
            _ if piece.last => false,
            _ => all_read && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use flate2::write::GzEncoder;

    use super::*;

    /// Words drawn at random from a vocabulary: about 3× compressible, as
    /// NDJSON records are.
    pub(in crate::archive) fn words(len: usize) -> Vec<u8> {
        let mut state = 1u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        let vocabulary: Vec<String> = (0..2_000)
            .map(|_| {
                (0..3 + next() % 8)
                    .map(|_| (b'a' + (next() % 26) as u8) as char)
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(vocabulary[next() % vocabulary.len()].as_bytes());
            out.push(if next() % 12 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out
    }

    fn compressed(input: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut encoder = ParallelGzEncoder::with_threads(Vec::new(), 6, threads);
        for chunk in input.chunks(write_size.max(1)) {
            encoder.write_all(chunk).unwrap();
        }
        encoder.finish().unwrap()
    }

    /// Read as a single member: a reader that stops after the first one
    /// (Python's tarfile in stream mode) gets everything.
    pub(in crate::archive) fn gunzip_first_member(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn the_pieces_make_one_gzip_member_of_the_input() {
        for len in [
            0,
            1,
            PIECE_BYTES - 1,
            PIECE_BYTES,
            PIECE_BYTES + 1,
            3 * PIECE_BYTES,
            5 * PIECE_BYTES + 17,
        ] {
            for threads in [1, 2, 3] {
                let input = words(len);
                let gz = compressed(&input, threads, 100_003);
                assert_eq!(
                    gunzip_first_member(&gz),
                    input,
                    "{len} bytes, {threads} threads"
                );
                let trailer = &gz[gz.len() - 8..];
                assert_eq!(trailer[..4], crc32fast::hash(&input).to_le_bytes());
                assert_eq!(trailer[4..], (len as u32).to_le_bytes());
            }
        }
    }

    #[test]
    fn pieces_cost_little_size_over_one_stream() {
        let input = words(6 * PIECE_BYTES);
        let pieces = compressed(&input, 2, 65_536).len() as f64;
        let mut one = GzEncoder::new(Vec::new(), Compression::new(6));
        one.write_all(&input).unwrap();
        let one = one.finish().unwrap().len() as f64;
        assert!(pieces / one < 1.005, "{pieces} against {one}");
    }

    #[test]
    fn encoders_at_work_at_once_share_the_cores() {
        let cores = encoder_cores();
        let first = ParallelGzEncoder::new(Vec::new(), 6);
        let second = ParallelGzEncoder::new(Vec::new(), 6);
        assert!(first.threads.len() <= cores && !second.threads.is_empty());
        if cores > 1 {
            assert!(
                second.threads.len() < cores,
                "the second takes what is left"
            );
        }
        let held = THREADS_IN_USE.load(Ordering::Relaxed);
        assert!(held >= first.claimed + second.claimed);
        first.finish().unwrap();
        drop(second);
        assert!(THREADS_IN_USE.load(Ordering::Relaxed) < held);
    }

    #[test]
    fn an_unfinished_encoder_stops_its_threads() {
        let mut encoder = ParallelGzEncoder::with_threads(Vec::new(), 6, 2);
        encoder.write_all(&words(3 * PIECE_BYTES + 5)).unwrap();
        drop(encoder);
    }
}
