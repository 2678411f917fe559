//! One gzip stream written in slices by separate encoders (an export's
//! slices, each on a worker of its own): the first slice with the header,
//! the others bare, each ended at a byte boundary, then `trailer`. The
//! slices' deflate blocks read as one stream, one ordinary gzip member.

use crc32fast::Hasher;

/// Where one slice of a gzip stream sits in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// The whole stream: header, deflate, trailer.
    Whole,
    /// Not the end: the header if `first`, no final block, no trailer.
    Open { first: bool },
}

/// What a slice's bytes add to the stream's trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceSum {
    pub crc: u32,
    pub length: u64,
}

/// The end of a stream whose slices (in order) summed to `sums`: an empty
/// final block, then the CRC-32 and length of everything.
pub fn trailer(sums: &[SliceSum]) -> [u8; 10] {
    let mut crc = Hasher::new();
    let mut length = 0u64;
    for sum in sums {
        crc.combine(&Hasher::new_with_initial_len(sum.crc, sum.length));
        length += sum.length;
    }
    let mut out = [0u8; 10];
    // BFINAL, fixed Huffman codes, end of block: 3 bits then 7 zero bits.
    out[0] = 0x03;
    out[2..6].copy_from_slice(&crc.finalize().to_le_bytes());
    out[6..].copy_from_slice(&(length as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::super::parallel_gzip::tests::{gunzip_first_member, words};
    use super::super::parallel_gzip::{ParallelGzEncoder, PIECE_BYTES};
    use super::*;

    #[test]
    fn slices_written_apart_then_joined_with_the_trailer_are_one_gzip_member() {
        let input = words(3 * PIECE_BYTES + 777);
        for cuts in [
            vec![0, input.len()],
            vec![0, 10, input.len()],
            vec![
                0,
                PIECE_BYTES,
                PIECE_BYTES,
                2 * PIECE_BYTES + 5,
                input.len(),
            ],
        ] {
            let mut joined = Vec::new();
            let mut sums = Vec::new();
            for (n, range) in cuts.windows(2).enumerate() {
                let slice = Slice::Open { first: n == 0 };
                let mut encoder = ParallelGzEncoder::slice_with_threads(Vec::new(), 6, 2, slice);
                encoder.write_all(&input[range[0]..range[1]]).unwrap();
                let (out, sum) = encoder.finish_slice().unwrap();
                assert_eq!(sum.length, (range[1] - range[0]) as u64);
                joined.extend_from_slice(&out);
                sums.push(sum);
            }
            joined.extend_from_slice(&trailer(&sums));
            assert_eq!(gunzip_first_member(&joined), input, "cut at {cuts:?}");
            let mut whole = Vec::new();
            flate2::read::MultiGzDecoder::new(&joined[..])
                .read_to_end(&mut whole)
                .unwrap();
            assert_eq!(whole.len(), input.len());
        }
    }
}
