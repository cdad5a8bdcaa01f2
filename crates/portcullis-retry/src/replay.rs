//! Replayable HTTP request bodies (feature `http`): a body recorded while it is sent, up to a
//! bound, so that a retry can send it again.
//!
//! `http::Request` is not `Clone`, because a body is a stream that can be read once. That is
//! why tower's `Retry` and tonic cannot retry a request whose body is not already in memory.
//! [`ReplayBody`] wraps the body: the first attempt streams it as it comes (nothing waits for
//! the end of the body, so a client-streaming or bidirectional call flows as before), and each
//! data frame is kept until the recording passes the bound. A retry then sends the recording
//! and, if the first attempt stopped reading before the end, goes on reading the original body
//! where that attempt left off.
//!
//! # The rules
//!
//! - **Bounded.** Once the data passes the bound ([`DEFAULT_LIMIT`], 64 KiB, unless set), the
//!   recording is dropped and the body can no longer be replayed: [`ReplayRequest`] answers
//!   `None`, and [`Retry`](crate::Retry) stops with [`StopReason::NotReplayable`](crate::StopReason::NotReplayable). The attempt
//!   under way goes on streaming; memory stays within the bound whatever the body's size.
//! - **One reader at a time.** Each copy takes over when it is first polled: from then on, an
//!   older copy (an attempt that was given up but whose connection still reads its body) gets
//!   an error ([`Superseded`]) rather than data, so that the two never split the original body
//!   between them, and a server never receives a truncated body as if it were complete.
//! - **A failed body is not replayed.** If the original body fails, the error goes to the
//!   attempt that read it, and no later copy is made.
//! - **Trailers** are kept with the recording and sent again.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use portcullis_retry::replay::ReplayBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), portcullis_retry::BoxError> {
//! let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")));
//! let template = body.replay().expect("nothing read yet");
//! // The first attempt sends the body...
//! assert_eq!(body.collect().await?.to_bytes(), "hello");
//! // ...and a retry sends it again, from the recording.
//! let again = template.replay().expect("within the bound");
//! assert_eq!(again.collect().await?.to_bytes(), "hello");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::classify::Replay;
use crate::BoxError;

/// The default bound on a recorded body: 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// A request body that can be sent again, up to a bound: see the [module docs](self).
///
/// Its data is [`Bytes`] and its error a [`BoxError`] (the original body's error, or
/// [`Superseded`]).
pub struct ReplayBody<B> {
    shared: Arc<Mutex<State<B>>>,
    /// How many data frames of the body this copy has sent.
    sent: usize,
    /// Whether this copy has sent the trailers.
    sent_trailers: bool,
    /// The copy's turn as the reader, from its first poll; 0 before.
    turn: u64,
}

struct State<B> {
    /// The original body, until it has ended or failed.
    body: Option<Pin<Box<B>>>,
    /// The data frames read so far, while within the bound.
    recorded: Vec<Bytes>,
    /// Data frames read from the original so far (recorded or not).
    frames: usize,
    /// Bytes recorded.
    bytes: usize,
    limit: usize,
    /// The data passed the bound: the recording is gone.
    overflowed: bool,
    /// The original body failed.
    failed: bool,
    /// The original body has ended (its trailers, if any, are in `trailers`).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// The last turn handed out: the copy holding it is the reader.
    turn: u64,
}

impl<B> ReplayBody<B> {
    /// Wraps `body`, recording up to [`DEFAULT_LIMIT`] bytes of it.
    pub fn new(body: B) -> Self {
        Self::with_limit(body, DEFAULT_LIMIT)
    }

    /// Wraps `body`, recording up to `limit` bytes of it. A limit of 0 records only an empty
    /// body.
    pub fn with_limit(body: B, limit: usize) -> Self {
        Self {
            shared: Arc::new(Mutex::new(State {
                body: Some(Box::pin(body)),
                recorded: Vec::new(),
                frames: 0,
                bytes: 0,
                limit,
                overflowed: false,
                failed: false,
                ended: false,
                trailers: None,
                turn: 0,
            })),
            sent: 0,
            sent_trailers: false,
            turn: 0,
        }
    }

    /// A copy to send again from the start, or `None` if the body can no longer be replayed:
    /// its data passed the bound, or it failed.
    pub fn replay(&self) -> Option<Self> {
        let state = self.lock();
        if state.overflowed || state.failed {
            return None;
        }
        Some(Self {
            shared: self.shared.clone(),
            sent: 0,
            sent_trailers: false,
            turn: 0,
        })
    }

    /// Whether the body can still be replayed (see [`replay`](Self::replay)).
    pub fn is_replayable(&self) -> bool {
        let state = self.lock();
        !state.overflowed && !state.failed
    }

    /// Whether the original body has been read to its end (its trailers, if any, included):
    /// then a copy within the bound holds all of it.
    pub fn is_whole(&self) -> bool {
        self.lock().ended
    }

    /// The bound on the recording, in bytes.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // Nothing runs user code under this lock but the original body's `poll_frame`; a
        // panic there leaves a state whose every field is still coherent.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut state = this.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if this.turn == 0 {
            state.turn += 1;
            this.turn = state.turn;
        } else if this.turn != state.turn {
            return Poll::Ready(Some(Err(Box::new(Superseded(())))));
        }
        if this.sent < state.frames {
            // Behind the original: send from the recording.
            let Some(data) = state.recorded.get(this.sent).cloned() else {
                // The recording is gone: the body passed the bound after this copy was made,
                // read on by an older attempt that was still sending it.
                let limit = state.limit;
                return Poll::Ready(Some(Err(Box::new(BoundExceeded { limit }))));
            };
            this.sent += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if state.ended {
            if !this.sent_trailers {
                this.sent_trailers = true;
                if let Some(trailers) = state.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(body) = state.body.as_mut() else {
            // The original failed: its error went to the reader then.
            return Poll::Ready(None);
        };
        let frame = match body.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        // A body that says it has no more (an HTTP/1 connection that wrote its
        // content-length never polls for the end): whole once this frame is recorded.
        let at_end = body.is_end_stream();
        match frame {
            None => {
                state.ended = true;
                state.body = None;
                this.sent_trailers = true;
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                state.failed = true;
                state.body = None;
                state.recorded = Vec::new();
                Poll::Ready(Some(Err(error.into())))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    state.frames += 1;
                    this.sent = state.frames;
                    if !state.overflowed {
                        if state.bytes.saturating_add(data.len()) > state.limit {
                            state.overflowed = true;
                            state.recorded = Vec::new();
                            tracing::debug!(
                                limit = state.limit,
                                "request body past the replay bound: it will not be retried"
                            );
                        } else {
                            state.bytes += data.len();
                            state.recorded.push(data.clone());
                        }
                    }
                    if at_end {
                        state.ended = true;
                        state.body = None;
                        this.sent_trailers = true;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        state.ended = true;
                        state.body = None;
                        state.trailers = Some(trailers.clone());
                        this.sent_trailers = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // A frame of a kind http-body may add later: not ours to replay.
                    Err(_) => {
                        state.failed = true;
                        Poll::Ready(Some(Err(
                            "a body frame that is neither data nor trailers".into()
                        )))
                    }
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.lock();
        if self.turn != 0 && self.turn != state.turn {
            return false;
        }
        state.ended && self.sent >= state.frames && (self.sent_trailers || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.lock();
        if state.ended && !state.overflowed && !state.failed {
            // Everything is recorded: what this copy has left.
            let sent: usize = state.recorded.iter().take(self.sent).map(Bytes::len).sum();
            return SizeHint::with_exact((state.bytes - sent) as u64);
        }
        match (&state.body, self.sent) {
            // Nothing read yet: the original's own hint.
            (Some(body), 0) if state.frames == 0 => body.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("ReplayBody")
            .field("limit", &state.limit)
            .field("recorded_bytes", &state.bytes)
            .field("frames", &state.frames)
            .field("overflowed", &state.overflowed)
            .field("failed", &state.failed)
            .field("ended", &state.ended)
            .field("sent", &self.sent)
            .finish()
    }
}

/// The error a copy of a [`ReplayBody`] gets once a newer copy has started reading: its
/// attempt was given up and a retry sends the body now.
#[derive(Debug)]
pub struct Superseded(());

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body superseded: a retry is sending it")
    }
}

impl std::error::Error for Superseded {}

/// The error a copy of a [`ReplayBody`] gets if the body passed its bound after the copy was
/// made (an older attempt read on past it), so that the copy cannot send it whole.
#[derive(Debug)]
pub struct BoundExceeded {
    limit: usize,
}

impl BoundExceeded {
    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for BoundExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body larger than its replay bound ({} bytes): it cannot be sent again",
            self.limit
        )
    }
}

impl std::error::Error for BoundExceeded {}

/// The [`Replay`] of an `http::Request<ReplayBody<B>>`: the method, URI, version, headers and
/// extensions cloned, and the body replayed, or `None` once the body cannot be
/// ([`ReplayBody::replay`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayRequest;

impl<B> Replay<http::Request<ReplayBody<B>>> for ReplayRequest {
    fn replay(&self, req: &http::Request<ReplayBody<B>>) -> Option<http::Request<ReplayBody<B>>> {
        let body = req.body().replay()?;
        let mut copy = http::Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }

    /// The record goes into the copy's extensions, where
    /// [`tried_in_extensions`](crate::hedge::tried_in_extensions) finds it.
    fn tag(&self, req: &mut http::Request<ReplayBody<B>>, tried: &portcullis_pool::Tried) {
        req.extensions_mut().insert(tried.clone());
    }

    /// Once the body has been read to its end ([`ReplayBody::is_whole`]).
    fn is_whole(&self, req: &http::Request<ReplayBody<B>>) -> bool {
        req.body().is_whole()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;
    use tokio::sync::mpsc;
    use tokio_test::{assert_pending, assert_ready, task};

    type Chunk = Result<Frame<Bytes>, Infallible>;

    /// A body fed by hand, one frame at a time.
    fn channel_body() -> (
        mpsc::UnboundedSender<Chunk>,
        StreamBody<tokio_stream::wrappers::UnboundedReceiverStream<Chunk>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            tx,
            StreamBody::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
        )
    }

    fn data(s: &'static str) -> Chunk {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    fn poll_data<B>(body: &mut ReplayBody<B>) -> Poll<Option<Result<Bytes, String>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut t = task::spawn(());
        t.enter(|cx, _| Pin::new(&mut *body).poll_frame(cx))
            .map(|frame| {
                frame.map(|frame| {
                    frame
                        .map_err(|e| e.to_string())
                        .and_then(|f| f.into_data().map_err(|_| "trailers".to_string()))
                })
            })
    }

    #[tokio::test]
    async fn a_retry_sends_the_whole_body_and_trailers_again() {
        let (tx, inner) = channel_body();
        let mut first = ReplayBody::new(inner);
        let template = first.replay().unwrap();
        tx.send(data("ab")).unwrap();
        tx.send(data("cd")).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        tx.send(Ok(Frame::trailers(trailers.clone()))).unwrap();
        drop(tx);
        assert!(!template.is_whole());
        let collected = (&mut first).collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "abcd");
        assert!(first.is_end_stream());
        assert!(template.is_whole());

        let again = template.replay().unwrap();
        assert_eq!(again.size_hint().exact(), Some(4));
        let collected = again.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "abcd");
    }

    #[test]
    fn a_retry_of_a_body_half_sent_sends_the_recording_then_reads_on() {
        let (tx, inner) = channel_body();
        let mut first = ReplayBody::new(inner);
        let template = first.replay().unwrap();
        tx.send(data("ab")).unwrap();
        assert_eq!(assert_ready!(poll_data(&mut first)), Some(Ok("ab".into())));
        assert_pending!(poll_data(&mut first));

        // The first attempt failed with its body half sent; the retry takes over.
        let mut second = template.replay().unwrap();
        assert_eq!(assert_ready!(poll_data(&mut second)), Some(Ok("ab".into())));
        assert_pending!(poll_data(&mut second));
        // The old attempt may still be polled by its connection: it gets an error, not data.
        let old = assert_ready!(poll_data(&mut first)).unwrap().unwrap_err();
        assert!(old.contains("superseded"), "{old}");

        tx.send(data("cd")).unwrap();
        drop(tx);
        assert_eq!(assert_ready!(poll_data(&mut second)), Some(Ok("cd".into())));
        assert_eq!(assert_ready!(poll_data(&mut second)), None);

        // And a third attempt gets all of it from the recording.
        let mut third = template.replay().unwrap();
        assert_eq!(assert_ready!(poll_data(&mut third)), Some(Ok("ab".into())));
        assert_eq!(assert_ready!(poll_data(&mut third)), Some(Ok("cd".into())));
        assert_eq!(assert_ready!(poll_data(&mut third)), None);
    }

    #[tokio::test]
    async fn a_body_past_the_bound_is_sent_whole_once_and_never_replayed() {
        let body = Full::new(Bytes::from(vec![7u8; 100]));
        let first = ReplayBody::with_limit(body, 99);
        let template = first.replay().unwrap();
        assert_eq!(first.limit(), 99);
        // The attempt under way gets the whole body...
        assert_eq!(first.collect().await.unwrap().to_bytes().len(), 100);
        // ...and no retry can be made of it.
        assert!(!template.is_replayable());
        assert!(template.replay().is_none());

        // At the bound exactly, it is kept.
        let first = ReplayBody::with_limit(Full::new(Bytes::from(vec![7u8; 99])), 99);
        let template = first.replay().unwrap();
        first.collect().await.unwrap();
        assert_eq!(
            template
                .replay()
                .unwrap()
                .collect()
                .await
                .unwrap()
                .to_bytes(),
            vec![7u8; 99]
        );
    }

    #[tokio::test]
    async fn a_body_that_failed_is_not_replayed() {
        let (tx, inner) = mpsc::unbounded_channel::<Result<Frame<Bytes>, std::io::Error>>();
        let inner = StreamBody::new(tokio_stream::wrappers::UnboundedReceiverStream::new(inner));
        let first = ReplayBody::new(inner);
        let template = first.replay().unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"ab")))).unwrap();
        tx.send(Err(std::io::Error::other("client went away")))
            .unwrap();
        let error = first.collect().await.unwrap_err();
        assert!(error.to_string().contains("client went away"), "{error}");
        assert!(template.replay().is_none());
    }

    #[test]
    fn replay_request_copies_the_head_and_replays_the_body() {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://a/b?c")
            .header("x-k", "v")
            .body(ReplayBody::new(Full::new(Bytes::from_static(b"x"))))
            .unwrap();
        req.extensions_mut().insert(5u32);
        let copy = ReplayRequest.replay(&req).unwrap();
        assert_eq!(copy.method(), "POST");
        assert_eq!(copy.uri(), "http://a/b?c");
        assert_eq!(copy.headers()["x-k"], "v");
        assert_eq!(copy.extensions().get::<u32>(), Some(&5));
        assert_eq!(copy.version(), req.version());

        let refused = http::Request::new(ReplayBody::with_limit(
            Full::new(Bytes::from_static(b"too long")),
            1,
        ));
        let template = ReplayRequest.replay(&refused).unwrap();
        let mut body = refused.into_body();
        let mut t = task::spawn(());
        let _ = t.enter(|cx, _| Pin::new(&mut body).poll_frame(cx));
        assert!(ReplayRequest.replay(&template).is_none());
    }

    #[tokio::test]
    async fn a_body_that_says_it_has_ended_is_whole_after_its_last_frame() {
        // An HTTP/1 connection that wrote the content-length never polls for the end: the
        // inner body's `is_end_stream` makes the recording whole at its last frame.
        let mut body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")));
        assert!(!body.is_whole());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(frame.is_some_and(|frame| frame.is_ok()));
        assert!(body.is_whole());
        let copy = body.replay().unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    }
}
