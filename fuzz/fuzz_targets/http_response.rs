//! The Places response reader fed bytes split at fuzzer-chosen points.
//!
//! Input layout: byte 0's low four bits are how many split sizes follow
//! (0 to 15), its high bits pick the reader's body limit; then the sizes,
//! one byte each (0 feeds an empty slice), used in turn, round and round;
//! the rest is the response. A reader with no sizes gets the response whole.
//!
//! However the bytes are split, the outcome is the one of feeding them in
//! one piece: an error, or `Done` with the same status and body (and the
//! same keep-alive, once bytes the split feed never gave are counted as
//! extra). A finished reader accepts nothing more.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_herd::places::client::MAX_BODY;
use proxy_herd::places::http::{HttpError, Progress, Response, ResponseReader};

/// Body limits: the client's own, none at all, and two small ones.
const LIMITS: [usize; 4] = [MAX_BODY, 0, 16, 1000];

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(Response),
    Failed,
}

/// The outcome once `reader` has taken `pieces` in order, then EOF if it still needs more.
fn outcome<'a>(
    mut reader: ResponseReader,
    total: usize,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> Outcome {
    let mut fed = 0;
    for piece in pieces {
        fed += piece.len();
        match reader.feed(piece) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Done(mut response)) => {
                assert_finished(&mut reader);
                // Bytes never fed are extra bytes after the response.
                response.keep_alive &= fed == total;
                return Outcome::Done(response);
            }
            Err(e) => {
                assert_ne!(e, HttpError::AfterEnd, "fresh reader refused bytes");
                assert_finished(&mut reader);
                return Outcome::Failed;
            }
        }
    }
    assert_eq!(fed, total);
    let result = reader.eof();
    assert_finished(&mut reader);
    match result {
        Ok(response) => {
            assert!(!response.keep_alive, "keep-alive after EOF");
            Outcome::Done(response)
        }
        Err(e) => {
            assert_ne!(e, HttpError::AfterEnd);
            Outcome::Failed
        }
    }
}

fn assert_finished(reader: &mut ResponseReader) {
    assert_eq!(
        reader.feed(b"HTTP/1.1 200 OK\r\n\r\n"),
        Err(HttpError::AfterEnd)
    );
    assert_eq!(reader.eof(), Err(HttpError::AfterEnd));
}

/// Splits `bytes` by `sizes` in turn, cycling; gives the rest whole if the sizes make no progress.
fn split<'a>(bytes: &'a [u8], sizes: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() || sizes.iter().all(|&s| s == 0) {
        let mut pieces: Vec<&[u8]> = sizes.iter().map(|_| &bytes[..0]).collect();
        pieces.push(bytes);
        return pieces;
    }
    let mut pieces = Vec::new();
    let mut rest = bytes;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(usize::from(size).min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(control & 0x0f).min(rest.len());
    let limit = LIMITS[usize::from(control >> 4) % LIMITS.len()];
    let (sizes, response) = rest.split_at(count);

    let whole = outcome(
        ResponseReader::new(limit),
        response.len(),
        std::iter::once(response),
    );
    let pieces = split(response, sizes);
    let split_up = outcome(
        ResponseReader::new(limit),
        response.len(),
        pieces.iter().copied(),
    );
    assert_eq!(
        whole,
        split_up,
        "pieces {:?}",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
    if let Outcome::Done(response) = &whole {
        assert!(response.body.len() <= limit);
        assert!(
            !(100..200).contains(&response.status),
            "interim status {}",
            response.status
        );
    }
});
