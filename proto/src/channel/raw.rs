//! The byte level of a channel: one encoded message per `SOCK_SEQPACKET`
//! datagram, with file descriptors passed by `SCM_RIGHTS`.
//!
//! Internal to [`crate::channel`]: its send and receive take any
//! serializable type, so nothing outside this crate may reach it. The typed
//! [`super::Channel`] decides which types go through it and adds the
//! request ids; this module only moves bytes and descriptors safely.
//!
//! `SOCK_SEQPACKET` preserves message boundaries, so no framing is needed:
//! a datagram is a message. A receive error of any kind (garbage, an
//! oversized datagram, unexpected fds) means the peer process is broken or
//! compromised; callers treat it as a dead peer and fail closed. Receiving
//! never panics and never leaks a received fd: each one is owned by an
//! [`OwnedFd`] from the moment the call returns, so error paths close them.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroize;

use super::{ChannelError, MAX_FDS};
use crate::codec::{self, MAX_MESSAGE};

/// Linux's limit on fds per `SCM_RIGHTS` message (`SCM_MAX_FD`). The control
/// buffer is sized for this many, not for [`MAX_FDS`], so that a peer sending
/// too many cannot make the kernel truncate the control data
/// (`MSG_CTRUNC`): on truncation nix refuses to parse the control buffer,
/// which would leave the fds that did arrive open and unowned.
const SCM_MAX_FD: usize = 253;

/// One end of a `SOCK_SEQPACKET` socketpair, untyped.
#[derive(Debug)]
pub(super) struct RawChannel {
    fd: OwnedFd,
    /// The receive buffer, allocated on the first receive and reused: a
    /// role under a handshake storm receives a message per packet, and a
    /// 64 KiB allocation each would be work that belongs at set-up. A
    /// lock, not a cell, so that a channel can be shared between threads;
    /// a receive that finds it taken uses a buffer of its own.
    spare: Mutex<Spare>,
}

/// The buffers of a receive: the frame and the control data.
#[derive(Default)]
struct Spare {
    frame: Vec<u8>,
    cmsg: Vec<u8>,
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Spare({} bytes)", self.frame.len())
    }
}

impl RawChannel {
    fn from_owned(fd: OwnedFd) -> Self {
        RawChannel {
            fd,
            spare: Mutex::new(Spare::default()),
        }
    }

    /// Creates a connected pair of channel ends (close-on-exec; the parent
    /// clears that flag only on the end it hands to a child).
    pub(super) fn pair() -> Result<(RawChannel, RawChannel), ChannelError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((RawChannel::from_owned(a), RawChannel::from_owned(b)))
    }

    /// Wraps an inherited fd, which must be one end of a `SOCK_SEQPACKET`
    /// socketpair.
    pub(super) fn from_fd(fd: OwnedFd) -> Self {
        RawChannel::from_owned(fd)
    }

    /// Gives back the underlying socket, e.g. to pass it to a child process.
    pub(super) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends one message.
    pub(super) fn send<T: Serialize>(&self, msg: &T) -> Result<(), ChannelError> {
        self.send_with_fds(msg, &[])
    }

    /// Sends one message together with up to [`MAX_FDS`] file descriptors.
    /// The receiver gets duplicates; the caller still owns `fds`.
    pub(super) fn send_with_fds<T: Serialize>(
        &self,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), ChannelError> {
        if fds.len() > MAX_FDS {
            return Err(ChannelError::TooManyFds);
        }
        // Wiped when dropped, whichever way this returns.
        let bytes = codec::encode(msg)?;
        if bytes.is_empty() {
            return Err(ChannelError::EmptyMessage);
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(&bytes)];
        loop {
            // MSG_NOSIGNAL: a dead peer must be an error we can report,
            // not a SIGPIPE that kills this process without a word.
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) if n == bytes.len() => return Ok(()),
                // SOCK_SEQPACKET sends are atomic; a short count would mean
                // the peer got a truncated message.
                Ok(_) => return Err(ChannelError::Io(Errno::EMSGSIZE)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(map_errno(e)),
            }
        }
    }

    /// Receives one message. A message that carries file descriptors is an
    /// error ([`ChannelError::TooManyFds`]) and the fds are closed.
    pub(super) fn recv<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        self.recv_inner(0, MsgFlags::empty()).map(|(msg, _)| msg)
    }

    /// [`recv`](Self::recv) that never waits, whatever the socket's mode:
    /// [`ChannelError::WouldBlock`] when nothing is queued. For a process
    /// that drains its input without making its own sends non-blocking.
    pub(super) fn try_recv<T: DeserializeOwned>(&self) -> Result<T, ChannelError> {
        self.recv_inner(0, MsgFlags::MSG_DONTWAIT)
            .map(|(msg, _)| msg)
    }

    /// Receives one message and the up to [`MAX_FDS`] file descriptors sent
    /// with it (close-on-exec). More than that is an error and all of them
    /// are closed.
    pub(super) fn recv_with_fds<T: DeserializeOwned>(
        &self,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        self.recv_inner(MAX_FDS, MsgFlags::empty())
    }

    fn recv_inner<T: DeserializeOwned>(
        &self,
        max_fds: usize,
        extra: MsgFlags,
    ) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        // One byte more than the largest message, so that an oversized
        // datagram shows up (as MSG_TRUNC, or as too long to decode) rather
        // than being silently cut to a size that might still decode.
        let mut buf = RecvBuf::take(&self.spare, MAX_MESSAGE + 1);
        let (len, fds, flags) = loop {
            let mut iov = [IoSliceMut::new(&mut buf.buf)];
            let msg = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut buf.cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | extra,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(map_errno(e)),
            };
            let mut fds = Vec::new();
            // On MSG_CTRUNC nix will not parse the control data (see
            // SCM_MAX_FD for why that cannot happen with SCM_RIGHTS alone).
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        fds.extend(raw.into_iter().map(|fd| {
                            // SAFETY: the kernel has just installed `fd` in
                            // our table for this message; nothing else
                            // knows it, so this is its only owner.
                            unsafe { OwnedFd::from_raw_fd(fd) }
                        }));
                    }
                }
            }
            break (msg.bytes, fds, msg.flags);
        };
        buf.used = len.min(buf.buf.len());

        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(ChannelError::Truncated);
        }
        if fds.len() > max_fds {
            return Err(ChannelError::TooManyFds);
        }
        if len == 0 && fds.is_empty() {
            // End of file. A zero-length datagram reads the same; we never
            // send one, so either way the peer is gone or broken.
            return Err(ChannelError::Closed);
        }
        let msg = codec::decode(&buf.buf[..buf.used])?;
        Ok((msg, fds))
    }

    /// Switches the socket between blocking and non-blocking mode; in
    /// non-blocking mode, operations that would wait return
    /// [`ChannelError::WouldBlock`].
    pub(super) fn set_nonblocking(&self, on: bool) -> Result<(), ChannelError> {
        let raw = self.fd.as_raw_fd();
        let mut flags = OFlag::from_bits_retain(fcntl(raw, FcntlArg::F_GETFL)?);
        flags.set(OFlag::O_NONBLOCK, on);
        fcntl(raw, FcntlArg::F_SETFL(flags))?;
        Ok(())
    }
}

impl AsFd for RawChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RawChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn map_errno(e: Errno) -> ChannelError {
    match e {
        Errno::EAGAIN => ChannelError::WouldBlock,
        Errno::EPIPE | Errno::ECONNRESET => ChannelError::Closed,
        e => ChannelError::Io(e),
    }
}

/// Receive buffer that wipes what was received into it when dropped, since
/// messages may carry keys, and goes back to its channel for the next
/// receive.
struct RecvBuf<'a> {
    buf: Vec<u8>,
    used: usize,
    cmsg: Vec<u8>,
    home: &'a Mutex<Spare>,
}

impl<'a> RecvBuf<'a> {
    /// The channel's buffers if they are free and have been allocated, new
    /// ones otherwise.
    fn take(home: &'a Mutex<Spare>, len: usize) -> Self {
        let spare = home
            .try_lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        let buf = if spare.frame.len() == len {
            spare.frame
        } else {
            vec![0; len]
        };
        // Room for credentials too, in case SO_PASSCRED is ever set on this
        // socket: they would come first and squeeze out fds.
        let mut cmsg = spare.cmsg;
        if cmsg.capacity() == 0 {
            cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD], nix::libc::ucred);
        }
        RecvBuf {
            buf,
            used: 0,
            cmsg,
            home,
        }
    }
}

impl Drop for RecvBuf<'_> {
    fn drop(&mut self) {
        // Only the received prefix can hold anything; wiping all 64 KiB on
        // every message would be wasted work. Control data holds only
        // descriptor numbers.
        self.buf[..self.used].zeroize();
        if let Ok(mut spare) = self.home.try_lock() {
            if spare.frame.is_empty() {
                spare.frame = std::mem::take(&mut self.buf);
                spare.cmsg = std::mem::take(&mut self.cmsg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecError;
    use nix::fcntl::FdFlag;
    use nix::sys::socket::send;
    use nix::unistd::{pipe, read, write};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u32),
        Key { index: u32, key: [u8; 32] },
        Blob(Vec<u8>),
        Stop,
    }

    fn send_raw(ch: &RawChannel, bytes: &[u8]) {
        let n = send(ch.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).unwrap();
        assert_eq!(n, bytes.len());
    }

    #[test]
    fn channel_round_trip() {
        let (a, b) = RawChannel::pair().unwrap();
        let msgs = [
            Msg::Ping(1),
            Msg::Key {
                index: 7,
                key: [0x42; 32],
            },
            Msg::Blob(vec![9; 60_000]),
            Msg::Stop,
        ];
        for m in &msgs {
            a.send(m).unwrap();
        }
        for m in &msgs {
            assert_eq!(&b.recv::<Msg>().unwrap(), m);
        }
        // And the other way.
        b.send(&Msg::Ping(2)).unwrap();
        assert_eq!(a.recv::<Msg>().unwrap(), Msg::Ping(2));
    }

    #[test]
    fn channel_round_trip_across_threads() {
        let (a, b) = RawChannel::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut sum = 0u64;
            while let Msg::Ping(n) = b.recv::<Msg>().unwrap() {
                sum += u64::from(n);
            }
            sum
        });
        for n in 1..=100 {
            a.send(&Msg::Ping(n)).unwrap();
        }
        a.send(&Msg::Stop).unwrap();
        assert_eq!(t.join().unwrap(), 5050);
    }

    #[test]
    fn channel_fd_passing() {
        let (a, b) = RawChannel::pair().unwrap();
        let (rd, wr) = pipe().unwrap();
        a.send_with_fds(&Msg::Ping(5), &[wr.as_fd()]).unwrap();
        drop(wr);

        let (msg, mut fds) = b.recv_with_fds::<Msg>().unwrap();
        assert_eq!(msg, Msg::Ping(5));
        assert_eq!(fds.len(), 1);
        let got = fds.pop().unwrap();
        let fd_flags = FdFlag::from_bits_retain(fcntl(got.as_raw_fd(), FcntlArg::F_GETFD).unwrap());
        assert!(fd_flags.contains(FdFlag::FD_CLOEXEC), "MSG_CMSG_CLOEXEC");

        write(&got, b"hello").unwrap();
        drop(got);
        let mut out = [0u8; 16];
        let n = read(rd.as_raw_fd(), &mut out).unwrap();
        assert_eq!(&out[..n], b"hello");
        // The received copy was the last write end: EOF now.
        assert_eq!(read(rd.as_raw_fd(), &mut out).unwrap(), 0);
    }

    #[test]
    fn channel_recv_with_fds_without_fds() {
        let (a, b) = RawChannel::pair().unwrap();
        a.send(&Msg::Stop).unwrap();
        let (msg, fds) = b.recv_with_fds::<Msg>().unwrap();
        assert_eq!(msg, Msg::Stop);
        assert!(fds.is_empty());
    }

    #[test]
    fn channel_eof_after_peer_drop() {
        let (a, b) = RawChannel::pair().unwrap();
        a.send(&Msg::Ping(1)).unwrap();
        drop(a);
        // Queued messages are still delivered, then end of file.
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(1));
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::Closed)));
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::Closed)));
        assert!(matches!(b.send(&Msg::Stop), Err(ChannelError::Closed)));
    }

    #[test]
    fn channel_oversized_datagram() {
        let (a, b) = RawChannel::pair().unwrap();
        // Bigger than the receive buffer: the kernel truncates.
        send_raw(&a, &vec![1u8; MAX_MESSAGE + 100]);
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::Truncated)));
        // Exactly one byte over fits the buffer but not the codec limit.
        send_raw(&a, &vec![1u8; MAX_MESSAGE + 1]);
        assert!(matches!(
            b.recv::<Msg>(),
            Err(ChannelError::Codec(CodecError::TooLarge { .. }))
        ));
        // The rest of the oversized datagrams was discarded, not left queued.
        a.send(&Msg::Ping(3)).unwrap();
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(3));
    }

    #[test]
    fn channel_send_too_large() {
        let (a, _b) = RawChannel::pair().unwrap();
        assert!(matches!(
            a.send(&Msg::Blob(vec![0; MAX_MESSAGE])),
            Err(ChannelError::Codec(CodecError::TooLarge { .. }))
        ));
    }

    #[test]
    fn channel_garbage_datagram() {
        let (a, b) = RawChannel::pair().unwrap();
        send_raw(&a, &[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            b.recv::<Msg>(),
            Err(ChannelError::Codec(CodecError::Malformed(_)))
        ));
        // A valid message with a byte too many.
        let mut bytes = codec::encode(&Msg::Ping(1)).unwrap().to_vec();
        bytes.push(0);
        send_raw(&a, &bytes);
        assert!(matches!(
            b.recv::<Msg>(),
            Err(ChannelError::Codec(CodecError::TrailingBytes(1)))
        ));
        a.send(&Msg::Ping(4)).unwrap();
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(4));
    }

    #[test]
    fn channel_empty_datagram_reads_as_closed() {
        let (a, b) = RawChannel::pair().unwrap();
        send_raw(&a, &[]);
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::Closed)));
        assert!(matches!(a.send(&()), Err(ChannelError::EmptyMessage)));
    }

    #[test]
    fn channel_unexpected_fds_closed() {
        let (a, b) = RawChannel::pair().unwrap();
        let (rd, wr) = pipe().unwrap();
        a.send_with_fds(&Msg::Ping(6), &[wr.as_fd()]).unwrap();
        drop(wr);
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::TooManyFds)));
        // The only write end left was the one received; it must be closed.
        let mut out = [0u8; 1];
        assert_eq!(read(rd.as_raw_fd(), &mut out).unwrap(), 0);
        // The channel still works.
        a.send(&Msg::Ping(7)).unwrap();
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(7));
    }

    #[test]
    fn channel_too_many_fds() {
        let (a, b) = RawChannel::pair().unwrap();
        let (rd, wr) = pipe().unwrap();
        let many = vec![wr.as_fd(); MAX_FDS + 1];
        assert!(matches!(
            a.send_with_fds(&Msg::Stop, &many),
            Err(ChannelError::TooManyFds)
        ));

        // A peer that ignores the limit, up to the kernel's own: no control
        // data truncation, and every received copy is closed.
        let raw = vec![wr.as_raw_fd(); SCM_MAX_FD];
        let bytes = codec::encode(&Msg::Stop).unwrap();
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .unwrap();
        drop(wr);
        assert!(matches!(
            b.recv_with_fds::<Msg>(),
            Err(ChannelError::TooManyFds)
        ));
        let mut out = [0u8; 1];
        assert_eq!(read(rd.as_raw_fd(), &mut out).unwrap(), 0);
    }

    #[test]
    fn channel_nonblocking_empty() {
        let (a, b) = RawChannel::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::WouldBlock)));
        a.send(&Msg::Ping(8)).unwrap();
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(8));
        assert!(matches!(b.recv::<Msg>(), Err(ChannelError::WouldBlock)));
        b.set_nonblocking(false).unwrap();
        let flags = OFlag::from_bits_retain(fcntl(b.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn channel_into_fd_from_fd() {
        let (a, b) = RawChannel::pair().unwrap();
        let b = RawChannel::from_fd(b.into_fd());
        a.send(&Msg::Ping(9)).unwrap();
        assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(9));
    }
}
