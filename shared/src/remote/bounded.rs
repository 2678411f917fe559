//! What a remote (a migration's source, a remote import's URL, an export's
//! upload target) may make this server read or wait for. Nothing it sends is
//! held whole: an error's body is read to a few KiB and dropped, a JSON
//! answer is capped, a file is paced, and every exchange has a deadline.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::stream::ByteStream;
use crate::{Error, Result};

/// Bytes of an unsuccessful answer's body kept to say what went wrong.
pub const ERROR_EXCERPT_BYTES: usize = 4 * 1024;
/// The largest JSON answer read (a relations export status of 20,000
/// batches is about 2 MiB).
pub const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;
/// How long a remote may take: the operator's settings (`Settings::remote`).
#[derive(Debug, Clone, Copy)]
pub struct RemoteLimits {
    /// One metadata exchange (a status, a project lookup), from connecting
    /// to its body's end, whatever the read timeout allows.
    pub metadata_deadline: Duration,
    /// How fast a file must come.
    pub file_pace: Pace,
}

impl Default for RemoteLimits {
    fn default() -> Self {
        RemoteLimits {
            metadata_deadline: Duration::from_secs(30),
            file_pace: Pace::FILE,
        }
    }
}
/// How fast a transfer must go: `grace` first, then `rate` bytes a second
/// on average for every byte received so far.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub grace: Duration,
    pub rate: u64,
}

impl Pace {
    /// A remote file: 64 KiB/s on average after a minute's grace (a slow
    /// first byte, TCP's slow start). A source sending a byte every few
    /// seconds is cut off instead of holding a worker for hours.
    pub const FILE: Pace = Pace {
        grace: Duration::from_secs(60),
        rate: 64 * 1024,
    };

    /// The longest `size` bytes may take.
    pub fn deadline(&self, size: u64) -> Duration {
        self.grace + Duration::from_secs_f64(size as f64 / self.rate.max(1) as f64)
    }
}

/// At most `ERROR_EXCERPT_BYTES` of an answer's body, as text; the rest is
/// never read (the connection is dropped with it).
pub async fn excerpt(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < ERROR_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ERROR_EXCERPT_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A JSON answer read up to `MAX_JSON_BYTES`; past it, a permanent failure
/// saying so (no retry makes an answer smaller).
pub async fn json<T: DeserializeOwned>(mut response: reqwest::Response, what: &str) -> Result<T> {
    let too_large =
        || Error::PayloadTooLarge(format!("{what} is larger than {MAX_JSON_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|size| size > MAX_JSON_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|err| Error::Storage(format!("{what}: {}", err.without_url())))?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_JSON_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|err| Error::BadRequest(format!("{what}: {err}")))
}

/// A file's body, at most `limit` bytes (`too_large` past it), failing once
/// it falls behind `pace`. A stall ends at that deadline too, not at the
/// next byte.
pub fn paced<S, E>(body: S, limit: u64, pace: Pace, too_large: String) -> ByteStream
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let started = tokio::time::Instant::now();
    let state = (Box::pin(body), 0u64, false);
    let stream = futures::stream::unfold(state, move |(mut body, seen, ended)| {
        let too_large = too_large.clone();
        async move {
            if ended {
                return None;
            }
            let allowed = pace.deadline(seen).min(pace.deadline(limit));
            let next = tokio::time::timeout_at(started + allowed, body.next()).await;
            let item = match next {
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the transfer fell below {} bytes/s ({seen} bytes in {} s)",
                        pace.rate,
                        started.elapsed().as_secs()
                    ),
                )),
                Ok(None) => return None,
                Ok(Some(Err(err))) => Err(std::io::Error::other(err.to_string())),
                Ok(Some(Ok(chunk))) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > limit {
                        Err(std::io::Error::other(too_large))
                    } else {
                        return Some((Ok(chunk), (body, seen, false)));
                    }
                }
            };
            Some((item, (body, seen, true)))
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trickle_is_cut_at_its_deadline() {
        // One byte every 30 ms against 100 bytes/s after 300 ms: behind.
        let pace = Pace {
            grace: Duration::from_millis(300),
            rate: 100,
        };
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), ()))
        });
        let mut body = paced(trickle, 1 << 30, pace, "too large".into());
        let started = tokio::time::Instant::now();
        let mut received = 0;
        let failure = loop {
            match body.next().await {
                Some(Ok(chunk)) => received += chunk.len(),
                Some(Err(err)) => break err,
                None => panic!("the trickle ended"),
            }
        };
        assert_eq!(failure.kind(), std::io::ErrorKind::TimedOut);
        // Cut when the bytes so far no longer excuse the time taken.
        let limit = pace.deadline(received as u64);
        assert!(started.elapsed() >= limit, "{received} bytes");
        assert!(received < 60, "{received}");
    }

    #[tokio::test]
    async fn a_body_past_its_limit_fails() {
        let chunks = futures::stream::iter(
            [b"abcd", b"efgh"].map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let items: Vec<_> = paced(chunks, 6, Pace::FILE, "past six".into())
            .collect()
            .await;
        assert!(items[0].is_ok());
        assert_eq!(items[1].as_ref().unwrap_err().to_string(), "past six");
        assert_eq!(items.len(), 2);
    }
}
