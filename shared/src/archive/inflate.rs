//! A gzip reader that can be left anywhere and entered again there, without
//! reading a byte before that point: the access points of zlib's
//! `examples/zran.c`. At a deflate block boundary the inflater's whole state
//! is where it stands in the compressed stream (a byte offset and 0 to 7
//! bits of the byte before it) and the last 32 KiB it wrote, which later
//! back-references may copy from. A raw inflater primed with those bits and
//! given that window as its dictionary goes on from there, on any deflate
//! stream: GitLab's single-member archives, which have no sync points, as
//! well as ours.
//!
//! Members are read here rather than by zlib's gzip mode: each member's
//! header is parsed, its body inflated raw, and its trailer (CRC-32 and
//! length) checked against what this reader computed, which an access point
//! carries on. Every member is read, as `gzip -dc` does; anything after the
//! last one that is not another member is refused.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libz_rs_sys as zlib;
use serde::{Deserialize, Serialize};

/// A deflate window: the farthest a back-reference reaches.
const WINDOW_BYTES: usize = 32 * 1024;
/// Access points are kept about this far apart in the output. Resuming at
/// one inflates again what lies between it and the stop, so this is what a
/// pause may cost, once per invocation; each point costs a copy of the
/// window (32 KiB per 256 KiB inflated, well under 1 % of the work).
const ACCESS_POINT_SPACING: u64 = 256 * 1024;
/// Access points kept: the reader's consumers lag behind the inflater by
/// about 3 MiB at most (the read-ahead blocks and buffers), inside the
/// 6 MiB these span.
const ACCESS_POINTS_KEPT: usize = 24;
const INPUT_BYTES: usize = 64 * 1024;

/// Where to start inflating again: `compressed` and `expanded` are offsets
/// from the start of the compressed and of the uncompressed stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPoint {
    pub compressed: u64,
    pub expanded: u64,
    /// Inside a member's deflate stream; none at the start of a member (or
    /// of the stream), where there is nothing to restore.
    pub member: Option<MemberPoint>,
}

/// The state of an inflater between two deflate blocks of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPoint {
    /// Bits of the byte before `compressed` that belong to the next block.
    pub bits: u8,
    /// Their value, right-aligned.
    pub value: u8,
    /// CRC-32 and length of the member's output so far, for its trailer.
    pub crc: u32,
    pub size: u64,
    /// The member's last output, up to 32 KiB.
    #[serde(with = "hex_bytes")]
    pub window: Vec<u8>,
}

impl AccessPoint {
    /// The start of a stream.
    pub fn start() -> Self {
        AccessPoint {
            compressed: 0,
            expanded: 0,
            member: None,
        }
    }
}

/// The access points an `Inflater` passed recently, readable from another
/// thread than the one inflating.
#[derive(Clone, Default)]
pub struct AccessPoints(Arc<Mutex<VecDeque<AccessPoint>>>);

impl AccessPoints {
    /// The latest point at or before `expanded`, if one is still kept.
    pub fn at_or_before(&self, expanded: u64) -> Option<AccessPoint> {
        let points = self.0.lock().unwrap_or_else(|e| e.into_inner());
        points
            .iter()
            .rev()
            .find(|point| point.expanded <= expanded)
            .cloned()
    }

    fn add(&self, point: AccessPoint) {
        let mut points = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if points.len() == ACCESS_POINTS_KEPT {
            points.pop_front();
        }
        points.push_back(point);
    }
}

/// How far an inflater got, readable from another thread: the compressed
/// offset of the next byte it reads, and the bytes it inflated.
#[derive(Debug, Default)]
pub struct Progress {
    compressed: AtomicU64,
    inflated: AtomicU64,
}

impl Progress {
    pub fn compressed(&self) -> u64 {
        self.compressed.load(Ordering::Relaxed)
    }

    pub fn inflated(&self) -> u64 {
        self.inflated.load(Ordering::Relaxed)
    }
}

enum Stage {
    Header,
    Body,
    Trailer,
    End,
}

/// Reads the uncompressed bytes of a gzip stream, from its start or from an
/// access point (`input` then starts at the point's compressed offset).
pub struct Inflater<R> {
    input: R,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    input_ended: bool,
    /// The last byte read: where an access point's leftover bits come from.
    previous_byte: u8,
    /// Offsets of the next byte to read from `input` and to hand out.
    compressed: u64,
    expanded: u64,
    stage: Stage,
    members: u64,
    stream: Box<zlib::z_stream>,
    crc: crc32fast::Hasher,
    member_size: u64,
    points: AccessPoints,
    last_point: u64,
    /// Bytes this reader inflated.
    inflated: u64,
    progress: Arc<Progress>,
}

// SAFETY: the stream's pointers refer to its own state and to buffers this
// struct owns; nothing of it is shared with another thread.
unsafe impl<R: Send> Send for Inflater<R> {}

impl<R: Read> Inflater<R> {
    /// Reads `input` from the start of its stream.
    pub fn new(input: R) -> io::Result<Self> {
        Self::resume(input, AccessPoint::start())
    }

    /// Goes on at `point`; `input` starts at its compressed offset.
    pub fn resume(input: R, point: AccessPoint) -> io::Result<Self> {
        let mut stream: Box<zlib::z_stream> = Box::default();
        // SAFETY: a fresh stream with the default allocator; a raw inflater
        // with the largest window (-15).
        let status = unsafe {
            zlib::inflateInit2_(
                &mut *stream,
                -15,
                zlib::zlibVersion(),
                std::mem::size_of::<zlib::z_stream>() as i32,
            )
        };
        if status != zlib::Z_OK {
            return Err(io::Error::other("the inflater could not start"));
        }
        let mut inflater = Inflater {
            input,
            buffer: vec![0u8; INPUT_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            input_ended: false,
            previous_byte: 0,
            compressed: point.compressed,
            expanded: point.expanded,
            stage: Stage::Header,
            members: 0,
            stream,
            crc: crc32fast::Hasher::new(),
            member_size: 0,
            points: AccessPoints::default(),
            last_point: point.expanded,
            inflated: 0,
            progress: Arc::default(),
        };
        if let Some(member) = &point.member {
            inflater.enter_member(member)?;
        }
        inflater.points.add(point);
        Ok(inflater)
    }

    /// Keeps `progress` up to date as it reads.
    pub fn report_to(mut self, progress: Arc<Progress>) -> Self {
        progress
            .compressed
            .store(self.compressed, Ordering::Relaxed);
        self.progress = progress;
        self
    }

    /// The access points passed so far (the latest few), for another thread.
    pub fn access_points(&self) -> AccessPoints {
        self.points.clone()
    }

    /// Bytes inflated by this reader (not counting what came before the
    /// access point it started at).
    pub fn inflated(&self) -> u64 {
        self.inflated
    }

    fn enter_member(&mut self, member: &MemberPoint) -> io::Result<()> {
        if member.bits > 7 || member.window.len() > WINDOW_BYTES {
            return Err(io::Error::other("a corrupt access point"));
        }
        let stream = &mut *self.stream;
        // SAFETY: the stream was initialized; the window outlives the call.
        unsafe {
            if member.bits > 0
                && zlib::inflatePrime(stream, i32::from(member.bits), i32::from(member.value))
                    != zlib::Z_OK
            {
                return Err(io::Error::other("a corrupt access point"));
            }
            if !member.window.is_empty()
                && zlib::inflateSetDictionary(
                    stream,
                    member.window.as_ptr(),
                    member.window.len() as u32,
                ) != zlib::Z_OK
            {
                return Err(io::Error::other("a corrupt access point"));
            }
        }
        self.crc = crc32fast::Hasher::new_with_initial_len(member.crc, member.size);
        self.member_size = member.size;
        self.members = 1;
        self.stage = Stage::Body;
        Ok(())
    }

    fn fill(&mut self) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        if self.input_ended {
            return Ok(false);
        }
        loop {
            match self.input.read(&mut self.buffer) {
                Ok(0) => {
                    self.input_ended = true;
                    return Ok(false);
                }
                Ok(n) => {
                    (self.start, self.end) = (0, n);
                    return Ok(true);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }

    fn next_byte(&mut self, what: &str) -> io::Result<u8> {
        if !self.fill()? {
            return Err(unexpected_end(what));
        }
        let byte = self.buffer[self.start];
        self.start += 1;
        self.compressed += 1;
        Ok(byte)
    }

    /// Reads a member's header; `false` at the clean end of the stream.
    fn read_header(&mut self) -> io::Result<bool> {
        if !self.fill()? {
            if self.members == 0 {
                return Err(unexpected_end("gzip header"));
            }
            return Ok(false);
        }
        let mut header = crc32fast::Hasher::new();
        let mut byte = |this: &mut Self| -> io::Result<u8> {
            let byte = this.next_byte("gzip header")?;
            header.update(&[byte]);
            Ok(byte)
        };
        let fixed: Vec<u8> = (0..10).map(|_| byte(self)).collect::<io::Result<_>>()?;
        if fixed[0] != 0x1f || fixed[1] != 0x8b {
            return Err(invalid(if self.members == 0 {
                "not a gzip stream"
            } else {
                "data after the last gzip member is not gzip"
            }));
        }
        if fixed[2] != 8 {
            return Err(invalid("unknown gzip compression method"));
        }
        let flags = fixed[3];
        if flags & 0xe0 != 0 {
            return Err(invalid("unknown gzip header flags set"));
        }
        if flags & 0x04 != 0 {
            let length = u16::from_le_bytes([byte(self)?, byte(self)?]);
            for _ in 0..length {
                byte(self)?;
            }
        }
        for flag in [0x08, 0x10] {
            // The file name and the comment: zero-terminated.
            if flags & flag != 0 {
                while byte(self)? != 0 {}
            }
        }
        if flags & 0x02 != 0 {
            let expected = header.clone().finalize() as u16;
            let stored = u16::from_le_bytes([
                self.next_byte("gzip header")?,
                self.next_byte("gzip header")?,
            ]);
            if stored != expected {
                return Err(invalid("gzip header checksum mismatch"));
            }
        }
        // SAFETY: the stream was initialized.
        if unsafe { zlib::inflateReset(&mut *self.stream) } != zlib::Z_OK {
            return Err(io::Error::other("the inflater could not restart"));
        }
        self.crc = crc32fast::Hasher::new();
        self.member_size = 0;
        self.members += 1;
        Ok(true)
    }

    fn read_trailer(&mut self) -> io::Result<()> {
        let mut trailer = [0u8; 8];
        for byte in &mut trailer {
            *byte = self.next_byte("gzip trailer")?;
        }
        let crc = u32::from_le_bytes(trailer[..4].try_into().expect("four bytes"));
        let size = u32::from_le_bytes(trailer[4..].try_into().expect("four bytes"));
        if crc != self.crc.clone().finalize() {
            return Err(invalid("gzip CRC-32 mismatch"));
        }
        if size != self.member_size as u32 {
            return Err(invalid("gzip length mismatch"));
        }
        Ok(())
    }

    /// Inflates into `out` up to the end of the next deflate block.
    fn inflate(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Err(unexpected_end("deflate stream"));
        }
        let stream = &mut *self.stream;
        stream.next_in = self.buffer[self.start..self.end].as_ptr();
        stream.avail_in = (self.end - self.start) as u32;
        stream.next_out = out.as_mut_ptr();
        stream.avail_out = out.len().min(u32::MAX as usize) as u32;
        // SAFETY: the stream was initialized; its input and output point
        // into live buffers of the lengths given.
        let status = unsafe { zlib::inflate(stream, zlib::Z_BLOCK) };
        let consumed = (self.end - self.start) - stream.avail_in as usize;
        let written = out.len().min(u32::MAX as usize) - stream.avail_out as usize;
        stream.next_in = std::ptr::null();
        stream.next_out = std::ptr::null_mut();
        let data_type = stream.data_type;
        self.start += consumed;
        self.compressed += consumed as u64;
        if consumed > 0 {
            self.previous_byte = self.buffer[self.start - 1];
        }
        self.crc.update(&out[..written]);
        self.member_size += written as u64;
        self.expanded += written as u64;
        self.inflated += written as u64;
        self.report();
        match status {
            zlib::Z_STREAM_END => self.stage = Stage::Trailer,
            zlib::Z_OK | zlib::Z_BUF_ERROR => {
                // Right after a block, and not the last one: an access point.
                let between_blocks = data_type & 128 != 0 && data_type & 64 == 0;
                if between_blocks && self.expanded - self.last_point >= ACCESS_POINT_SPACING {
                    self.mark(data_type);
                }
            }
            _ => return Err(invalid("corrupt deflate stream")),
        }
        Ok(written)
    }

    fn report(&self) {
        let progress = &self.progress;
        progress
            .compressed
            .store(self.compressed, Ordering::Relaxed);
        progress.inflated.store(self.inflated, Ordering::Relaxed);
    }

    fn mark(&mut self, data_type: i32) {
        let bits = (data_type & 7) as u8;
        let value = if bits > 0 {
            self.previous_byte >> (8 - bits)
        } else {
            0
        };
        let mut window = vec![0u8; WINDOW_BYTES];
        let mut length = 0u32;
        // SAFETY: the window has room for the largest dictionary.
        unsafe { zlib::inflateGetDictionary(&*self.stream, window.as_mut_ptr(), &mut length) };
        window.truncate(length as usize);
        self.points.add(AccessPoint {
            compressed: self.compressed,
            expanded: self.expanded,
            member: Some(MemberPoint {
                bits,
                value,
                crc: self.crc.clone().finalize(),
                size: self.member_size,
                window,
            }),
        });
        self.last_point = self.expanded;
    }
}

impl<R: Read> Read for Inflater<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.stage {
                Stage::Header => {
                    let at = (self.compressed, self.expanded);
                    if !self.read_header()? {
                        self.stage = Stage::End;
                        continue;
                    }
                    if self.expanded - self.last_point >= ACCESS_POINT_SPACING {
                        self.points.add(AccessPoint {
                            compressed: at.0,
                            expanded: at.1,
                            member: None,
                        });
                        self.last_point = self.expanded;
                    }
                    self.stage = Stage::Body;
                }
                Stage::Body => {
                    let written = self.inflate(out)?;
                    if written > 0 {
                        return Ok(written);
                    }
                }
                Stage::Trailer => {
                    self.read_trailer()?;
                    self.report();
                    self.stage = Stage::Header;
                }
                Stage::End => return Ok(0),
            }
        }
    }
}

impl<R> Drop for Inflater<R> {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized and is not used after this.
        unsafe { zlib::inflateEnd(&mut *self.stream) };
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn unexpected_end(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the gzip stream ends inside its {what}"),
    )
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    /// Text that compresses into many blocks, with back-references far back.
    fn sample(bytes: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes);
        let mut state = seed;
        while out.len() < bytes {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word = (state >> 33) % 5000;
            writeln!(out, "{{\"id\":{word},\"title\":\"issue {}\"}}", word * 7).unwrap();
        }
        out.truncate(bytes);
        out
    }

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::new(level));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(reader: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn reads_what_gzip_wrote_over_several_members() {
        let (first, second) = (sample(3_000_000, 1), sample(200_000, 2));
        let mut stream = gzip(&first, 6);
        stream.extend(gzip(&second, 1));
        let mut inflater = Inflater::new(&stream[..]).unwrap();
        let out = read_all(&mut inflater).unwrap();
        assert_eq!(out, [first, second].concat());
        assert_eq!(inflater.inflated(), out.len() as u64);
    }

    #[test]
    fn every_access_point_resumes_to_the_same_bytes() {
        let data = [sample(5_000_000, 3), sample(2_500_000, 4)].concat();
        let mut stream = gzip(&data[..5_000_000], 6);
        stream.extend(gzip(&data[5_000_000..], 9));
        let mut inflater = Inflater::new(&stream[..]).unwrap();
        let points = inflater.access_points();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 100_000];
        loop {
            let n = inflater.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            let latest = points.at_or_before(u64::MAX).unwrap();
            if seen.last() != Some(&latest) {
                seen.push(latest);
            }
        }
        assert!(seen.len() >= 6, "{} access points", seen.len());
        assert!(seen
            .iter()
            .any(|p| p.member.as_ref().is_some_and(|m| m.bits > 0)));
        for point in seen {
            // Through a JSON round trip, as a checkpoint keeps it.
            let point: AccessPoint =
                serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap();
            let (compressed, expanded) = (point.compressed as usize, point.expanded as usize);
            let mut resumed = Inflater::resume(&stream[compressed..], point).unwrap();
            let rest = read_all(&mut resumed).unwrap();
            assert!(rest == data[expanded..], "resumed at {expanded}");
            assert_eq!(resumed.inflated(), (data.len() - expanded) as u64);
        }
    }

    #[test]
    fn refuses_corruption_a_wrong_trailer_and_trailing_garbage() {
        let data = sample(400_000, 5);
        let stream = gzip(&data, 6);
        let mut crc = stream.clone();
        let at = crc.len() - 8;
        crc[at] ^= 1;
        let mut length = stream.clone();
        let at = length.len() - 1;
        length[at] ^= 1;
        let mut garbage = stream.clone();
        garbage.extend_from_slice(b"\0\0\0\0");
        let truncated = &stream[..stream.len() - 3];
        let mut body = stream.clone();
        body[100] ^= 0xff;
        for (name, bad) in [
            ("crc", &crc[..]),
            ("length", &length[..]),
            ("garbage", &garbage[..]),
            ("truncated", truncated),
            ("body", &body[..]),
            ("empty", &[][..]),
        ] {
            let result = Inflater::new(bad).and_then(|mut r| read_all(&mut r));
            assert!(result.is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn reads_optional_header_fields() {
        let data = sample(10_000, 6);
        let mut encoder = flate2::GzBuilder::new()
            .filename("a.tar")
            .comment("made by a test")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), Compression::default());
        encoder.write_all(&data).unwrap();
        let stream = encoder.finish().unwrap();
        let mut inflater = Inflater::new(&stream[..]).unwrap();
        assert_eq!(read_all(&mut inflater).unwrap(), data);
    }

    #[test]
    fn refuses_a_corrupt_access_point() {
        let point = AccessPoint {
            compressed: 0,
            expanded: 0,
            member: Some(MemberPoint {
                bits: 9,
                value: 0,
                crc: 0,
                size: 0,
                window: Vec::new(),
            }),
        };
        assert!(Inflater::resume(&[][..], point).is_err());
    }
}
