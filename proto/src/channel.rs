//! A channel between two of wgd's processes, typed by direction: a
//! [`Channel<Out, In>`] sends only `Out` and receives only `In`, so a
//! message of another channel's enum is a compile error, not a bug found
//! at run time.
//!
//! Who may call what: the roles table in `wgd` (`wgd/src/roles.rs`) is the
//! only code that creates channel ends ([`Channel::pair`] in the parent,
//! [`Channel::from_fd`] in a re-executed child) and so the only place that
//! says which enums each socketpair carries. Every role's loop receives its
//! ends already typed and uses the methods below.
//!
//! Two kinds of traffic, chosen by the message enums of [`crate::ipc`]:
//!
//! - **Requests and replies** ([`Request`]): each request travels with an
//!   id, and its reply must echo that id. The asking side calls
//!   [`Channel::ask`] (or [`Channel::ask_with_fds`]); the answering side
//!   [`Channel::recv_request`] and then [`Channel::reply`] with the
//!   [`ReplyTo`] it got. A reply carrying any other id is
//!   [`ChannelError::OutOfStep`]: the peer is answering something else
//!   than what was asked, which is treated like any garbage (a dead peer).
//!   An asking side that wants a few questions in flight (the handshake
//!   role, so that the key holder finds the next question waiting when it
//!   answers one) sends each with [`Channel::submit`] and takes the
//!   replies, in the order it sent the questions, with [`Channel::collect`];
//!   the answering side is the same, since it answers one at a time, in
//!   order.
//! - **Events** ([`Event`]): one-way orders and reports, with
//!   [`Channel::send`] and [`Channel::recv`]; no ids, no replies.
//!
//! The bytes (one message per `SOCK_SEQPACKET` datagram, fds by
//! `SCM_RIGHTS`, size-limited decode, fds owned from the moment they
//! arrive) are the untyped core's job, private to this module.
//!
//! Sending a message on the wrong channel does not compile:
//!
//! ```compile_fail,E0308
//! use proto::channel::Channel;
//! use proto::ipc::{CryptoToParent, ParentToCrypto, ParentToHandshake};
//!
//! let (parent, _crypto) = Channel::<ParentToCrypto, CryptoToParent>::pair().unwrap();
//! let _ = parent.ask(&ParentToHandshake::GetCounters);
//! ```
//!
//! while the same code with the channel's own request does (so the example
//! above fails for the reason it shows, not another):
//!
//! ```
//! use proto::channel::Channel;
//! use proto::ipc::{CryptoToParent, ParentToCrypto, ParentToHandshake};
//!
//! let (parent, _crypto) = Channel::<ParentToCrypto, CryptoToParent>::pair().unwrap();
//! // Nobody answers here, so don't wait for it.
//! parent.set_nonblocking(true).unwrap();
//! let _ = parent.ask(&ParentToCrypto::SetPrivateKey(None));
//! # let _ = ParentToHandshake::GetCounters;
//! ```
//!
//! Nor does receiving another channel's enum:
//!
//! ```compile_fail,E0308
//! use proto::channel::Channel;
//! use proto::ipc::{CryptoToParent, ParentToCrypto, ParentToHandshake};
//!
//! let (_parent, crypto) = Channel::<ParentToCrypto, CryptoToParent>::pair().unwrap();
//! let (_to, _msg): (_, ParentToHandshake) = crypto.recv_request().unwrap();
//! ```
//!
//! ```
//! use proto::channel::Channel;
//! use proto::ipc::{CryptoToParent, ParentToCrypto, ParentToHandshake};
//!
//! let (parent, crypto) = Channel::<ParentToCrypto, CryptoToParent>::pair().unwrap();
//! parent.set_nonblocking(true).unwrap();
//! let _ = parent.ask(&ParentToCrypto::SetPrivateKey(None));
//! let (to, _msg): (_, ParentToCrypto) = crypto.recv_request().unwrap();
//! crypto.reply(to, &CryptoToParent::Done).unwrap();
//! # let _ = ParentToHandshake::GetCounters;
//! ```

mod raw;

use std::cell::Cell;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use raw::RawChannel;

/// Most file descriptors that one message may carry.
pub const MAX_FDS: usize = 8;

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer hung up (end of file on receive, `EPIPE` on send).
    #[error("peer closed the channel")]
    Closed,
    /// The datagram or its control data was larger than our buffers.
    #[error("datagram or its control data was truncated")]
    Truncated,
    /// More fds than allowed: over [`MAX_FDS`] on send or receive, or any at
    /// all where the message takes none. Received ones have been closed.
    #[error("too many file descriptors on the channel")]
    TooManyFds,
    /// The message encodes to zero bytes, which on `SOCK_SEQPACKET` cannot
    /// be told apart from the peer hanging up; IPC enums always encode to
    /// at least their variant tag.
    #[error("refusing to send an empty message")]
    EmptyMessage,
    /// The channel is non-blocking (or has a receive timeout) and the
    /// operation would block.
    #[error("operation would block")]
    WouldBlock,
    /// A reply answered another request than the one just asked.
    #[error("reply to request {got} where request {expected} was asked")]
    OutOfStep { expected: u64, got: u64 },
    /// The message could not be encoded, or the received bytes did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Any other system call failure.
    #[error("channel I/O error: {0}")]
    Io(#[from] Errno),
}

pub(crate) mod sealed {
    /// Only the enums of [`crate::ipc`] travel on channels: the untyped
    /// core must not be reachable from outside this crate with a type of
    /// the caller's choosing.
    pub trait Sealed {}
}

/// Anything that travels on a channel: the enums of [`crate::ipc`].
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {}

impl<T: Serialize + DeserializeOwned + sealed::Sealed> Message for T {}

/// A message that asks for exactly one answer, of type `Reply`.
pub trait Request: Message {
    type Reply: Message;
}

/// A one-way message: sent, never answered.
pub trait Event: Message {}

/// How a request or a reply travels: the message with the request's id.
/// Serialized by reference on send (`Tagged<&T>`) and owned on receive;
/// both encode the same.
#[derive(Serialize, Deserialize)]
struct Tagged<T> {
    id: u64,
    body: T,
}

/// The id of a received request, to be handed back with its one reply.
/// Neither `Clone` nor `Copy`: answering twice does not type-check.
#[derive(Debug)]
#[must_use = "a request must be answered, or the asking side waits until it gives up"]
pub struct ReplyTo {
    id: u64,
}

/// A request sent with [`Channel::submit`] whose reply is still to be
/// taken with [`Channel::collect`]. Neither `Clone` nor `Copy`: each reply
/// is taken once.
#[derive(Debug)]
#[must_use = "the reply to a submitted request must be collected, or the next reply is out of step"]
pub struct Submitted {
    id: u64,
}

/// Both ends of one channel: this one sends `Out`, its mirror sends `In`.
pub type Pair<Out, In> = (Channel<Out, In>, Channel<In, Out>);

/// One end of a channel: sends `Out`, receives `In`.
///
/// Which methods exist depends on the enums: [`Channel::ask`] when `Out`
/// is a [`Request`] answered by `In`, [`Channel::recv_request`] and
/// [`Channel::reply`] when `In` is a [`Request`] answered by `Out`,
/// [`Channel::send`] when `Out` is an [`Event`], [`Channel::recv`] when
/// `In` is one.
#[derive(Debug)]
pub struct Channel<Out, In> {
    raw: RawChannel,
    /// Id of the next request this end asks. A `Cell`: a channel end asks
    /// one thing at a time, and is not shared between threads.
    next_id: Cell<u64>,
    // `fn(Out) -> In` rather than `(Out, In)`: the end owns no message, and
    // should be `Send` whatever the enums are.
    _dir: PhantomData<fn(Out) -> In>,
}

impl<Out, In> Channel<Out, In> {
    fn wrap(raw: RawChannel) -> Self {
        Channel {
            raw,
            next_id: Cell::new(1),
            _dir: PhantomData,
        }
    }

    /// Creates a connected pair: this end, and its mirror that sends `In`
    /// and receives `Out` (both close-on-exec; the parent clears that
    /// flag only on the end it hands to a child). Only the roles table
    /// calls this.
    pub fn pair() -> Result<Pair<Out, In>, ChannelError> {
        let (a, b) = RawChannel::pair()?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    /// Wraps an inherited fd, which must be the mirror end of a channel
    /// created by [`Channel::pair`] with the same two enums swapped.
    /// Nothing can check that here, which is why only the roles table,
    /// which made the pair, calls this.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel::wrap(RawChannel::from_fd(fd))
    }

    /// Gives back the underlying socket, to pass it to a child process.
    pub fn into_fd(self) -> OwnedFd {
        self.raw.into_fd()
    }

    /// Switches the socket between blocking and non-blocking mode; in
    /// non-blocking mode, operations that would wait return
    /// [`ChannelError::WouldBlock`].
    pub fn set_nonblocking(&self, on: bool) -> Result<(), ChannelError> {
        self.raw.set_nonblocking(on)
    }

    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        id
    }

    /// Waits for the reply to request `id`.
    fn reply_to(&self, id: u64) -> Result<In, ChannelError>
    where
        In: Message,
    {
        let reply: Tagged<In> = self.raw.recv()?;
        if reply.id != id {
            return Err(ChannelError::OutOfStep {
                expected: id,
                got: reply.id,
            });
        }
        Ok(reply.body)
    }
}

impl<Out: Request<Reply = In>, In: Message> Channel<Out, In> {
    /// Sends a request and waits for its reply. A reply that answers any
    /// other request is [`ChannelError::OutOfStep`].
    pub fn ask(&self, req: &Out) -> Result<In, ChannelError> {
        self.ask_with_fds(req, &[])
    }

    /// As [`Channel::ask`], with up to [`MAX_FDS`] file descriptors sent
    /// along. The receiver gets duplicates; the caller still owns `fds`.
    pub fn ask_with_fds(&self, req: &Out, fds: &[BorrowedFd<'_>]) -> Result<In, ChannelError> {
        let id = self.next_id();
        self.raw.send_with_fds(&Tagged { id, body: req }, fds)?;
        self.reply_to(id)
    }

    /// Sends a request without waiting for its reply. The answering side
    /// replies in the order requests arrive, so the replies of several
    /// submitted requests must be collected in the order they were
    /// submitted (any other order is [`ChannelError::OutOfStep`]), and
    /// none may be outstanding when [`Channel::ask`] is called. Keep only
    /// a few in flight: a blocking send waits when the other side's
    /// buffer is full, and the other side waits to send its replies when
    /// ours is.
    pub fn submit(&self, req: &Out) -> Result<Submitted, ChannelError> {
        let id = self.next_id();
        self.raw.send(&Tagged { id, body: req })?;
        Ok(Submitted { id })
    }

    /// Waits for the reply to a submitted request (see [`Channel::submit`]).
    pub fn collect(&self, sent: Submitted) -> Result<In, ChannelError> {
        self.reply_to(sent.id)
    }
}

impl<Out: Message, In: Request<Reply = Out>> Channel<Out, In> {
    /// Receives one request; answer it with [`Channel::reply`]. A request
    /// that carries file descriptors is an error
    /// ([`ChannelError::TooManyFds`]) and the fds are closed.
    pub fn recv_request(&self) -> Result<(ReplyTo, In), ChannelError> {
        let req: Tagged<In> = self.raw.recv()?;
        Ok((ReplyTo { id: req.id }, req.body))
    }

    /// Receives one request and the up to [`MAX_FDS`] file descriptors
    /// sent with it (close-on-exec). More than that is an error and all of
    /// them are closed.
    pub fn recv_request_with_fds(&self) -> Result<(ReplyTo, In, Vec<OwnedFd>), ChannelError> {
        let (req, fds): (Tagged<In>, _) = self.raw.recv_with_fds()?;
        Ok((ReplyTo { id: req.id }, req.body, fds))
    }

    /// Answers the request `to` came with.
    pub fn reply(&self, to: ReplyTo, reply: &Out) -> Result<(), ChannelError> {
        self.raw.send(&Tagged {
            id: to.id,
            body: reply,
        })
    }
}

impl<Out: Event, In> Channel<Out, In> {
    /// Sends one message.
    pub fn send(&self, msg: &Out) -> Result<(), ChannelError> {
        self.raw.send(msg)
    }
}

impl<Out, In: Event> Channel<Out, In> {
    /// Receives one message. A message that carries file descriptors is an
    /// error ([`ChannelError::TooManyFds`]) and the fds are closed.
    pub fn recv(&self) -> Result<In, ChannelError> {
        self.raw.recv()
    }

    /// Receives one message if one is queued, without waiting and without
    /// making the end non-blocking for sends: [`ChannelError::WouldBlock`]
    /// when there is none.
    pub fn try_recv(&self) -> Result<In, ChannelError> {
        self.raw.try_recv()
    }
}

impl<Out, In> AsFd for Channel<Out, In> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.raw.as_fd()
    }
}

impl<Out, In> AsRawFd for Channel<Out, In> {
    fn as_raw_fd(&self) -> RawFd {
        self.raw.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{send, MsgFlags};
    use nix::unistd::{pipe, read, write};

    use crate::codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Question {
        Add(u32, u32),
        Stop,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Answer {
        Sum(u32),
        Done,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Note {
        Ping(u32),
    }

    impl sealed::Sealed for Question {}
    impl sealed::Sealed for Answer {}
    impl sealed::Sealed for Note {}
    impl Request for Question {
        type Reply = Answer;
    }
    impl Event for Note {}

    type Asker = Channel<Question, Answer>;

    fn send_raw<O, I>(ch: &Channel<O, I>, bytes: &[u8]) {
        let n = send(ch.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).unwrap();
        assert_eq!(n, bytes.len());
    }

    fn tagged<T: Serialize>(id: u64, body: T) -> Vec<u8> {
        codec::encode(&Tagged { id, body }).unwrap().to_vec()
    }

    fn serve_one(server: &Channel<Answer, Question>) {
        let (to, q) = server.recv_request().unwrap();
        let a = match q {
            Question::Add(x, y) => Answer::Sum(x + y),
            Question::Stop => Answer::Done,
        };
        server.reply(to, &a).unwrap();
    }

    #[test]
    fn reply_to_the_right_id_is_accepted() {
        let (client, server) = Asker::pair().unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..100 {
                serve_one(&server);
            }
        });
        for n in 0..100 {
            assert_eq!(
                client.ask(&Question::Add(n, 1)).unwrap(),
                Answer::Sum(n + 1)
            );
        }
        t.join().unwrap();
    }

    /// Several requests in flight: their replies are taken in the order
    /// sent, and an ask after them is in step; collected in the wrong
    /// order, a reply is out of step.
    #[test]
    fn submitted_requests_are_collected_in_order() {
        let (client, server) = Asker::pair().unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..9 {
                serve_one(&server);
            }
            server
        });
        let sent: Vec<Submitted> = (0..8)
            .map(|n| client.submit(&Question::Add(n, 10)).unwrap())
            .collect();
        for (n, s) in (0..8).zip(sent) {
            assert_eq!(client.collect(s).unwrap(), Answer::Sum(n + 10));
        }
        assert_eq!(client.ask(&Question::Stop).unwrap(), Answer::Done);
        let server = t.join().unwrap();

        let first = client.submit(&Question::Add(1, 1)).unwrap();
        let second = client.submit(&Question::Add(2, 2)).unwrap();
        serve_one(&server);
        serve_one(&server);
        assert!(matches!(
            client.collect(second),
            Err(ChannelError::OutOfStep {
                expected: 11,
                got: 10
            })
        ));
        drop(first);
    }

    #[test]
    fn ids_count_up_from_one() {
        let (client, server) = Asker::pair().unwrap();
        client.set_nonblocking(true).unwrap();
        for want in 1..=3 {
            // No answer yet: the request is out, the reply would block.
            assert!(matches!(
                client.ask(&Question::Stop),
                Err(ChannelError::WouldBlock)
            ));
            let (to, _) = server.recv_request().unwrap();
            assert_eq!(to.id, want);
            // Answered too late: the next ask sees a stale id.
            if want == 3 {
                server.reply(to, &Answer::Done).unwrap();
            }
        }
        assert!(matches!(
            client.ask(&Question::Stop),
            Err(ChannelError::OutOfStep {
                expected: 4,
                got: 3
            })
        ));
    }

    #[test]
    fn out_of_step_reply_is_an_error() {
        let (client, server) = Asker::pair().unwrap();
        let t = std::thread::spawn(move || {
            let (to, _) = server.recv_request().unwrap();
            // A reply to another request than the one just asked, with
            // an otherwise valid body.
            send_raw(&server, &tagged(to.id + 1, Answer::Sum(3)));
            server
        });
        assert!(matches!(
            client.ask(&Question::Add(1, 2)),
            Err(ChannelError::OutOfStep {
                expected: 1,
                got: 2
            })
        ));
        let server = t.join().unwrap();

        // An answer to a request never asked, waiting before the real one.
        send_raw(&server, &tagged(0, Answer::Done));
        let t = std::thread::spawn(move || serve_one(&server));
        assert!(matches!(
            client.ask(&Question::Stop),
            Err(ChannelError::OutOfStep {
                expected: 2,
                got: 0
            })
        ));
        t.join().unwrap();
    }

    #[test]
    fn reply_without_id_is_an_error() {
        let (client, server) = Asker::pair().unwrap();
        // The bare enum, as an event channel would carry it: `Sum(3)` is
        // the bytes [0, 3], which read as id 0 and then a missing body.
        send_raw(&server, &codec::encode(&Answer::Sum(3)).unwrap());
        assert!(matches!(
            client.ask(&Question::Stop),
            Err(ChannelError::Codec(_) | ChannelError::OutOfStep { .. })
        ));
        // Garbage is garbage.
        send_raw(&server, &[0xff; 11]);
        assert!(matches!(
            client.ask(&Question::Stop),
            Err(ChannelError::Codec(_))
        ));
    }

    #[test]
    fn request_with_fds() {
        let (client, server) = Asker::pair().unwrap();
        let (rd, wr) = pipe().unwrap();
        let t = std::thread::spawn(move || {
            let (to, q, mut fds) = server.recv_request_with_fds().unwrap();
            assert_eq!(q, Question::Stop);
            assert_eq!(fds.len(), 1);
            let got = fds.pop().unwrap();
            write(&got, b"hi").unwrap();
            server.reply(to, &Answer::Done).unwrap();
            // A plain request with fds is refused, and they are closed.
            assert!(matches!(
                server.recv_request(),
                Err(ChannelError::TooManyFds)
            ));
        });
        assert_eq!(
            client.ask_with_fds(&Question::Stop, &[wr.as_fd()]).unwrap(),
            Answer::Done
        );
        client.set_nonblocking(true).unwrap();
        let _ = client.ask_with_fds(&Question::Stop, &[wr.as_fd()]);
        drop(wr);
        t.join().unwrap();
        let mut out = [0u8; 4];
        let n = read(rd.as_raw_fd(), &mut out).unwrap();
        assert_eq!(&out[..n], b"hi");
        assert_eq!(read(rd.as_raw_fd(), &mut out).unwrap(), 0);
    }

    #[test]
    fn events_travel_bare() {
        let (a, b) = Channel::<Note, Note>::pair().unwrap();
        a.send(&Note::Ping(7)).unwrap();
        b.send(&Note::Ping(8)).unwrap();
        assert_eq!(b.recv().unwrap(), Note::Ping(7));
        assert_eq!(a.recv().unwrap(), Note::Ping(8));
        b.set_nonblocking(true).unwrap();
        assert!(matches!(b.recv(), Err(ChannelError::WouldBlock)));
        drop(a);
        assert!(matches!(b.recv(), Err(ChannelError::Closed)));
    }

    #[test]
    fn peer_gone_while_asking() {
        let (client, server) = Asker::pair().unwrap();
        drop(server);
        assert!(matches!(
            client.ask(&Question::Stop),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn from_fd_into_fd_keeps_the_channel() {
        let (client, server) = Asker::pair().unwrap();
        let server = Channel::<Answer, Question>::from_fd(server.into_fd());
        let t = std::thread::spawn(move || serve_one(&server));
        assert_eq!(client.ask(&Question::Add(2, 2)).unwrap(), Answer::Sum(4));
        t.join().unwrap();
    }
}
