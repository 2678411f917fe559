//! gzip written as independent members, compressed in parallel. The input
//! is cut into pieces of `PIECE_BYTES`; each becomes a whole gzip member of
//! its own on one of a few compressing threads, and the members are written
//! out in input order. Concatenated members are one standard gzip file
//! (RFC 1952 §2.2): `gzip -dc`, `tar -xzf`, Python's `tarfile` and our
//! importer read them all. One compressing thread on one core was the
//! export's ceiling; a member per piece lets every core work, and lets a
//! piece be compressed anywhere (a worker of its own) without the others.
//!
//! Memory is bounded: at most `threads + 1` pieces are out at once, so a
//! writer holds about `(threads + 2) × PIECE_BYTES` whatever it writes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Tar bytes per member. Each member starts without the 32 KiB of history
/// the one before it built: 1 MiB pieces cost about 0.3 % of size over one
/// stream, 256 KiB ones over 1 %.
pub const PIECE_BYTES: usize = 1024 * 1024;

/// Compressing threads: the machine's cores, at most this many.
const MAX_THREADS: usize = 4;

type Piece = (u64, Vec<u8>);
type Member = (u64, io::Result<Vec<u8>>);

/// Writes gzip members into `out` as pieces fill; `finish` writes the last
/// one and returns `out`.
pub struct MemberWriter<W: Write> {
    out: Option<W>,
    piece: Vec<u8>,
    pieces: Option<SyncSender<Piece>>,
    members: Receiver<Member>,
    threads: Vec<JoinHandle<()>>,
    /// Numbers of the next piece to send and of the next member to write.
    sent: u64,
    written: u64,
    /// Members that came back before the ones ahead of them.
    early: BTreeMap<u64, Vec<u8>>,
    max_out: u64,
}

impl<W: Write> MemberWriter<W> {
    pub fn new(out: W, level: u32) -> Self {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        Self::with_threads(out, level, threads)
    }

    pub fn with_threads(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (pieces, inbox) = sync_channel::<Piece>(threads);
        let (done, members) = sync_channel::<Member>(threads + 1);
        let inbox = Arc::new(Mutex::new(inbox));
        let level = Compression::new(level);
        let threads = (0..threads)
            .map(|n| {
                let (inbox, done) = (inbox.clone(), done.clone());
                std::thread::Builder::new()
                    .name(format!("gzip-member-{n}"))
                    .spawn(move || compress_pieces(&inbox, &done, level))
                    .expect("a compressing thread")
            })
            .collect::<Vec<_>>();
        let max_out = threads.len() as u64 + 1;
        MemberWriter {
            out: Some(out),
            piece: Vec::with_capacity(PIECE_BYTES),
            pieces: Some(pieces),
            members,
            threads,
            sent: 0,
            written: 0,
            early: BTreeMap::new(),
            max_out,
        }
    }

    /// Writes the last member (one at least: an empty input is an empty
    /// member, still a valid gzip file) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.piece.is_empty() || self.sent == 0 {
            self.send_piece()?;
        }
        while self.written < self.sent {
            self.write_next_member()?;
        }
        self.pieces = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let mut out = self.out.take().expect("finished once");
        out.flush()?;
        Ok(out)
    }

    fn send_piece(&mut self) -> io::Result<()> {
        while self.sent - self.written >= self.max_out {
            self.write_next_member()?;
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE_BYTES));
        let sender = self.pieces.as_ref().expect("open until finished");
        sender
            .send((self.sent, piece))
            .map_err(|_| io::Error::other("the gzip compressors stopped"))?;
        self.sent += 1;
        Ok(())
    }

    /// Waits for the member due next and writes it.
    fn write_next_member(&mut self) -> io::Result<()> {
        let member = loop {
            if let Some(member) = self.early.remove(&self.written) {
                break member;
            }
            let (n, member) = self
                .members
                .recv()
                .map_err(|_| io::Error::other("the gzip compressors stopped"))?;
            let member = member?;
            if n == self.written {
                break member;
            }
            self.early.insert(n, member);
        };
        self.out
            .as_mut()
            .expect("open until finished")
            .write_all(&member)?;
        self.written += 1;
        Ok(())
    }
}

impl<W: Write> Write for MemberWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = PIECE_BYTES - self.piece.len();
        let taken = room.min(buf.len());
        self.piece.extend_from_slice(&buf[..taken]);
        if self.piece.len() == PIECE_BYTES {
            self.send_piece()?;
        }
        Ok(taken)
    }

    /// Members are written whole: there is nothing to flush between them.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for MemberWriter<W> {
    fn drop(&mut self) {
        // Unfinished (an error on the way): stop the threads, write nothing.
        self.pieces = None;
        while self.members.try_recv().is_ok() {}
        for thread in self.threads.drain(..) {
            // A thread blocked on a full `members` channel needs it drained.
            while !thread.is_finished() {
                while self.members.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = thread.join();
        }
    }
}

fn compress_pieces(inbox: &Mutex<Receiver<Piece>>, done: &SyncSender<Member>, level: Compression) {
    loop {
        let next = inbox.lock().map(|inbox| inbox.recv());
        let Ok(Ok((n, piece))) = next else { return };
        let member = compress(&piece, level);
        drop(piece);
        if done.send((n, member)).is_err() {
            return;
        }
    }
}

fn compress(piece: &[u8], level: Compression) -> io::Result<Vec<u8>> {
    let mut gzip = GzEncoder::new(Vec::with_capacity(piece.len() / 3 + 64), level);
    gzip.write_all(piece)?;
    gzip.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::MultiGzDecoder;

    use super::*;

    fn text(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"abcdefghij klmnop\n"[(i * 7 + i / 13) % 18])
            .collect()
    }

    fn members_of(input: &[u8], threads: usize, write_size: usize) -> Vec<u8> {
        let mut writer = MemberWriter::with_threads(Vec::new(), 6, threads);
        for chunk in input.chunks(write_size.max(1)) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    fn gunzip_all(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn members_decompress_to_the_input_in_order() {
        for len in [
            0,
            1,
            PIECE_BYTES - 1,
            PIECE_BYTES,
            PIECE_BYTES + 1,
            5 * PIECE_BYTES + 17,
        ] {
            for threads in [1, 2, 3] {
                let input = text(len);
                let gz = members_of(&input, threads, 100_003);
                assert_eq!(gunzip_all(&gz), input, "{len} bytes, {threads} threads");
                let members = gz.windows(4).filter(|w| *w == [0x1f, 0x8b, 8, 0]).count();
                assert!(
                    members >= len.div_ceil(PIECE_BYTES).max(1),
                    "{members} members"
                );
            }
        }
    }

    #[test]
    fn members_cost_little_size_over_one_stream() {
        // Words drawn at random from a vocabulary: about 3× compressible,
        // as NDJSON records are.
        let mut state = 1u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        let words: Vec<String> = (0..2_000)
            .map(|_| {
                (0..3 + next() % 8)
                    .map(|_| (b'a' + (next() % 26) as u8) as char)
                    .collect()
            })
            .collect();
        let mut input = Vec::new();
        while input.len() < 6 * PIECE_BYTES {
            input.extend_from_slice(words[next() % words.len()].as_bytes());
            input.push(if next() % 12 == 0 { b'\n' } else { b' ' });
        }
        let members = members_of(&input, 2, 65_536).len() as f64;
        let mut one = GzEncoder::new(Vec::new(), Compression::new(6));
        one.write_all(&input).unwrap();
        let one = one.finish().unwrap().len() as f64;
        assert!(members / one < 1.01, "{members} against {one}");
    }

    #[test]
    fn an_unfinished_writer_stops_its_threads() {
        let mut writer = MemberWriter::with_threads(Vec::new(), 6, 2);
        writer.write_all(&text(3 * PIECE_BYTES + 5)).unwrap();
        drop(writer);
    }
}
