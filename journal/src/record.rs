//! One journal record: a 16-byte header (length, CRC, seq) and the envelope bytes.
//!
//! The CRC covers the seq and the payload, so a record whose header survived but whose payload
//! was torn (or whose seq was damaged) is detected, not misread.

/// Largest payload accepted; an envelope is at most 1 MiB (`verdict_proto::envelope`), so
/// anything larger is damage, not data.
pub const MAX_PAYLOAD: usize = 1 << 20;

pub(crate) const HEADER_LEN: usize = 16;

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
    /// Segment file name and byte offset of the record, for reports.
    pub segment: String,
    pub offset: u64,
    /// The record's checksum does not match: its bytes changed after they were written. Readers
    /// still get it, so a verifier can say what changed and a shipper loses nothing.
    pub damaged: bool,
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_be_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the framed record to `out`.
pub(crate) fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payload length checked by the writer");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
}

/// What the bytes at some offset hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framed<'a> {
    /// A whole record: its seq, payload, and total framed length.
    Whole {
        seq: u64,
        payload: &'a [u8],
        len: usize,
    },
    /// Fewer bytes than the header announces: still being written, or torn by a crash.
    Incomplete,
    /// Complete, but the checksum does not match: damaged after it was written.
    Damaged {
        seq: u64,
        payload: &'a [u8],
        len: usize,
    },
    /// A length no writer produces: the framing itself is damaged.
    Bad(String),
}

/// Decodes the record at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Framed<'_> {
    if bytes.len() < HEADER_LEN {
        return Framed::Incomplete;
    }
    let len = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Framed::Bad(format!("length {len} exceeds the {MAX_PAYLOAD}-byte limit"));
    }
    let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
        return Framed::Incomplete;
    };
    if checksum(seq, payload) != crc {
        return Framed::Damaged {
            seq,
            payload,
            len: HEADER_LEN + len,
        };
    }
    Framed::Whole {
        seq,
        payload,
        len: HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut out = Vec::new();
        encode(7, "세션 삭제".as_bytes(), &mut out);
        assert_eq!(
            decode(&out),
            Framed::Whole {
                seq: 7,
                payload: "세션 삭제".as_bytes(),
                len: out.len()
            }
        );
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]), Framed::Incomplete, "cut at {cut}");
        }
        for i in 4..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(decode(&bad), Framed::Damaged { .. }),
                "flip at {i}"
            );
        }
        let mut bad = out.clone();
        bad[0] = 0xff;
        assert!(matches!(decode(&bad), Framed::Bad(_)));
    }
}
