//! The cookie mechanism (whitepaper §5.4.7): proof of a round trip, asked
//! of handshake senders only while we are under load.
//!
//! Two halves:
//!
//! - [`CookieChecker`], ours as a receiver of handshake messages: it
//!   checks MAC1 against our public key, and under load demands a MAC2
//!   made with a cookie bound to the sender's address, answering a message
//!   without one by a sealed cookie reply.
//! - [`CookieJar`], one per peer, ours as a sender: it stamps MAC1 (and
//!   MAC2, while a cookie the peer gave us is fresh) on the handshake
//!   messages we send, and opens the cookie replies the peer sends.
//!
//! ```text
//! R_m           random 32 bytes, replaced every COOKIE_SECRET_MAX_AGE (120 s)
//! cookie τ      = MAC(R_m, source IP ‖ source port)
//! cookie reply  = type 3 ‖ receiver = msg.sender ‖ nonce (24 random bytes)
//!                 ‖ XAEAD(HASH("cookie--" ‖ Spub_m), nonce, τ, aad = msg.mac1)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use proto::keys::PublicKey;
use proto::wire::{CookieReply, COOKIE_SEALED_LEN};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::mac::{cookie_key, mac, mac1_key, verify, MAC_LEN};

/// How long our cookie secret lives, and how long a cookie we were given
/// is used (whitepaper: COOKIE_REFRESH_TIME).
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// A received cookie is used a little less long than it is valid, to
/// allow for the time it took to reach us (wireguard-go and Linux use 120 s
/// minus a few seconds of latency allowance).
pub const COOKIE_FRESH: Duration = Duration::from_secs(120 - 5);

/// Result of checking the MACs of an incoming handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacCheck {
    /// MAC1 is wrong: drop silently (it was not made for us).
    BadMac1,
    /// MAC1 good, and we are not under load or MAC2 is good too.
    Ok,
    /// MAC1 good, under load, MAC2 missing or wrong: answer with a cookie.
    NeedCookie,
}

/// Verifier side: our MAC1 key, the cookie secret and the cookie-reply key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CookieChecker {
    mac1_key: [u8; 32],
    reply_key: [u8; 32],
    secret: [u8; 32],
    #[zeroize(skip)]
    secret_born: Option<Instant>,
}

impl std::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieChecker(<redacted>)")
    }
}

fn address_bytes(from: &SocketAddr) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    let n = match from.ip() {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            b[..16].copy_from_slice(&a.octets());
            16
        }
    };
    b[n..n + 2].copy_from_slice(&from.port().to_be_bytes());
    (b, n + 2)
}

impl CookieChecker {
    /// For the interface whose public key is `ours`.
    pub fn new(ours: &PublicKey) -> Self {
        CookieChecker {
            mac1_key: mac1_key(ours),
            reply_key: cookie_key(ours),
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// τ for a source address, rotating the secret when it is too old.
    fn cookie_for(&mut self, now: Instant, from: &SocketAddr) -> [u8; MAC_LEN] {
        let stale = self
            .secret_born
            .is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_SECRET_MAX_AGE);
        if stale {
            rand::thread_rng().fill_bytes(&mut self.secret);
            self.secret_born = Some(now);
        }
        let (addr, n) = address_bytes(from);
        mac(&self.secret, &addr[..n])
    }

    /// Checks MAC1 (always) and MAC2 (when `under_load`) of a whole
    /// initiation or response whose MAC1 starts at `mac1_at`.
    pub fn check(
        &mut self,
        now: Instant,
        packet: &[u8],
        mac1_at: usize,
        from: &SocketAddr,
        under_load: bool,
    ) -> MacCheck {
        let Some(mac1) = packet
            .get(mac1_at..mac1_at + MAC_LEN)
            .and_then(|m| <&[u8; MAC_LEN]>::try_from(m).ok())
        else {
            return MacCheck::BadMac1;
        };
        if !verify(&self.mac1_key, &packet[..mac1_at], mac1) {
            return MacCheck::BadMac1;
        }
        if !under_load {
            return MacCheck::Ok;
        }
        let mac2_at = mac1_at + MAC_LEN;
        let Some(mac2) = packet
            .get(mac2_at..mac2_at + MAC_LEN)
            .and_then(|m| <&[u8; MAC_LEN]>::try_from(m).ok())
        else {
            return MacCheck::NeedCookie;
        };
        let tau = self.cookie_for(now, from);
        if verify(&tau, &packet[..mac2_at], mac2) {
            MacCheck::Ok
        } else {
            MacCheck::NeedCookie
        }
    }

    /// The cookie reply to a message from `from` whose sender index is
    /// `receiver` and whose MAC1 was `mac1`.
    pub fn make_reply(
        &mut self,
        now: Instant,
        receiver: u32,
        mac1: &[u8; MAC_LEN],
        from: &SocketAddr,
    ) -> CookieReply {
        let tau = self.cookie_for(now, from);
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut sealed = [0u8; COOKIE_SEALED_LEN];
        sealed[..MAC_LEN].copy_from_slice(&tau);
        let aead = XChaCha20Poly1305::new((&self.reply_key).into());
        let (msg, tag_out) = sealed.split_at_mut(MAC_LEN);
        match aead.encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, msg) {
            Ok(tag) => tag_out.copy_from_slice(&tag),
            // Only fails for plaintexts beyond 2^38 bytes; ours is 16.
            Err(_) => unreachable!("16-byte cookie is within AEAD limits"),
        }
        CookieReply {
            receiver,
            nonce,
            cookie: sealed,
        }
    }
}

/// Sender side, per peer: the latest cookie the peer gave us.
///
/// The two keys derived from the peer's public key (MAC1's, and the
/// cookie-reply key) are computed when needed rather than kept: one
/// BLAKE2s each, paid per handshake message we send or cookie reply we
/// open, against 64 bytes for every configured peer of a big hub. Callers
/// pass the peer's public key.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct CookieJar {
    cookie: [u8; MAC_LEN],
    #[zeroize(skip)]
    cookie_at: Option<Instant>,
    /// MAC1 of the last message we sent: the AAD of the reply we may get.
    last_mac1: Option<[u8; MAC_LEN]>,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("has_cookie", &self.cookie_at.is_some())
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// Fills MAC1 and MAC2 of an outgoing message to `peer` (`packet`
    /// whole, MAC1 at `mac1_at`, MAC2 right after it).
    pub fn stamp(&mut self, now: Instant, peer: &PublicKey, packet: &mut [u8], mac1_at: usize) {
        let mac2_at = mac1_at + MAC_LEN;
        let m1 = mac(&mac1_key(peer), &packet[..mac1_at]);
        packet[mac1_at..mac2_at].copy_from_slice(&m1);
        self.last_mac1 = Some(m1);
        let fresh = self
            .cookie_at
            .is_some_and(|at| now.saturating_duration_since(at) < COOKIE_FRESH);
        let m2 = if fresh {
            mac(&self.cookie, &packet[..mac2_at])
        } else {
            [0u8; MAC_LEN]
        };
        packet[mac2_at..mac2_at + MAC_LEN].copy_from_slice(&m2);
    }

    /// Opens a cookie reply from `peer` to our last message. Returns
    /// whether a cookie was accepted.
    pub fn consume_reply(&mut self, now: Instant, peer: &PublicKey, reply: &CookieReply) -> bool {
        let Some(aad) = self.last_mac1 else {
            return false;
        };
        let aead = XChaCha20Poly1305::new((&cookie_key(peer)).into());
        let mut buf = reply.cookie;
        let (msg, tag) = buf.split_at_mut(MAC_LEN);
        let ok = aead
            .decrypt_in_place_detached(
                XNonce::from_slice(&reply.nonce),
                &aad,
                msg,
                chacha20poly1305::Tag::from_slice(tag),
            )
            .is_ok();
        if ok {
            self.cookie.copy_from_slice(msg);
            self.cookie_at = Some(now);
        }
        buf.zeroize();
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::wire::{INITIATION_LEN, INITIATION_MAC1_OFFSET};

    fn msg() -> [u8; INITIATION_LEN] {
        let mut m = [7u8; INITIATION_LEN];
        m[..4].copy_from_slice(&[1, 0, 0, 0]);
        m
    }

    #[test]
    fn cookie_round_trip_gives_valid_mac2() {
        let ours = PublicKey([1; 32]);
        let now = Instant::now();
        let from: SocketAddr = "192.0.2.7:51820".parse().expect("literal");
        let mut checker = CookieChecker::new(&ours);
        let mut jar = CookieJar::default();
        let mut m = msg();
        jar.stamp(now, &ours, &mut m, INITIATION_MAC1_OFFSET);
        assert_eq!(
            checker.check(now, &m, INITIATION_MAC1_OFFSET, &from, false),
            MacCheck::Ok
        );
        assert_eq!(
            checker.check(now, &m, INITIATION_MAC1_OFFSET, &from, true),
            MacCheck::NeedCookie
        );
        let mac1: [u8; 16] = m[INITIATION_MAC1_OFFSET..INITIATION_MAC1_OFFSET + 16]
            .try_into()
            .expect("16");
        let reply = checker.make_reply(now, 42, &mac1, &from);
        assert_eq!(reply.receiver, 42);
        assert!(jar.consume_reply(now, &ours, &reply));
        jar.stamp(now, &ours, &mut m, INITIATION_MAC1_OFFSET);
        assert_eq!(
            checker.check(now, &m, INITIATION_MAC1_OFFSET, &from, true),
            MacCheck::Ok
        );
        // The cookie is bound to the address: another port must re-prove.
        let other: SocketAddr = "192.0.2.7:51821".parse().expect("literal");
        assert_eq!(
            checker.check(now, &m, INITIATION_MAC1_OFFSET, &other, true),
            MacCheck::NeedCookie
        );
        // After the secret rotates, the old cookie is no longer good.
        let later = now + COOKIE_SECRET_MAX_AGE;
        assert_eq!(
            checker.check(later, &m, INITIATION_MAC1_OFFSET, &from, true),
            MacCheck::NeedCookie
        );
        // And a stale cookie is not used for MAC2.
        jar.stamp(later, &ours, &mut m, INITIATION_MAC1_OFFSET);
        assert_eq!(&m[INITIATION_MAC1_OFFSET + 16..], &[0u8; 16]);
    }

    #[test]
    fn bad_mac1_is_detected() {
        let ours = PublicKey([1; 32]);
        let now = Instant::now();
        let from: SocketAddr = "[2001:db8::1]:9".parse().expect("literal");
        let mut checker = CookieChecker::new(&ours);
        let mut jar = CookieJar::default();
        let mut m = msg();
        jar.stamp(now, &PublicKey([2; 32]), &mut m, INITIATION_MAC1_OFFSET);
        assert_eq!(
            checker.check(now, &m, INITIATION_MAC1_OFFSET, &from, false),
            MacCheck::BadMac1
        );
    }

    #[test]
    fn forged_or_unsolicited_reply_is_refused() {
        let ours = PublicKey([1; 32]);
        let now = Instant::now();
        let from: SocketAddr = "192.0.2.7:1".parse().expect("literal");
        let mut checker = CookieChecker::new(&ours);
        let mut jar = CookieJar::default();
        let reply = checker.make_reply(now, 1, &[0; 16], &from);
        // Nothing sent yet: no AAD to check against.
        assert!(!jar.consume_reply(now, &ours, &reply));
        let mut m = msg();
        jar.stamp(now, &ours, &mut m, INITIATION_MAC1_OFFSET);
        // Reply bound to a different MAC1.
        assert!(!jar.consume_reply(now, &ours, &reply));
        let mac1: [u8; 16] = m[INITIATION_MAC1_OFFSET..INITIATION_MAC1_OFFSET + 16]
            .try_into()
            .expect("16");
        let mut good = checker.make_reply(now, 1, &mac1, &from);
        good.cookie[3] ^= 1;
        assert!(!jar.consume_reply(now, &ours, &good));
    }
}
