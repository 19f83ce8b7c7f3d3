//! What the parent opens with its privileges: the tun device, the UDP
//! sockets and the control socket. The parent never reads a packet from
//! any of these; it hands the tun device and the UDP sockets to the
//! transport role and keeps only duplicates of the UDP sockets, to set
//! `SO_MARK` (fwmark) on them later, which needs CAP_NET_ADMIN.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};

/// WireGuard's default MTU: 1500 minus the largest overhead (IPv6 40 +
/// UDP 8 + WireGuard 32).
pub const DEFAULT_MTU: u16 = 1420;
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Creates the tun device `name` and returns its descriptor.
///
/// With offloads where the kernel has them: `IFF_VNET_HDR`, and through
/// `TUNSETOFFLOAD` checksum offload with TSO for IPv4 and IPv6 (and USO,
/// Linux 6.2 on, which tun-rs asks for and leaves off if refused). The
/// kernel then hands the transport TCP super-packets of up to 64 KiB, one
/// read each, and takes merged ones back (`wg-transport/src/gso.rs`,
/// `gro.rs`). The transport learns which framing the device has from the
/// device itself (TUNGETIFF), so a kernel that refuses the offloads gets a
/// plain device, one IP packet per read, and nothing else changes.
pub fn create_tun(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.contains(char::is_whitespace)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(DEFAULT_MTU)
            .offload(offload)
            .inherit_enable_state()
            .build_sync()
    };
    let dev = match build(true) {
        Ok(d) => d,
        Err(e) => {
            // The device goes with its descriptor when the offloads were
            // refused, so the name is free to try again.
            tracing::info!("tun offloads refused ({e}); one packet per read");
            build(false)?
        }
    };
    let fd = dev.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up ownership of this open descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a network interface of this name exists (in our namespace).
pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The index of a network interface in our namespace, which is the
/// WireGuard interface's: what an endpoint's IPv6 zone name (`%eth0`, as
/// wg(8) sends it) means to the server of the userspace API.
pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// Send and receive buffer of each UDP socket, wireguard-go's size.
const SOCKET_BUFFER: usize = 7 << 20;

fn udp_socket(v6: bool, port: u16, fwmark: u32) -> io::Result<UdpSocket> {
    let family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if v6 {
        // Separate v4 and v6 sockets on the same port, as Linux WireGuard
        // binds them, so each family's source address is exact.
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if fwmark != 0 {
        setsockopt(&fd, sockopt::Mark, &fwmark)?;
    }
    // Bigger buffers, as wireguard-go sizes them (7 MiB, forced past
    // net.core.rmem_max/wmem_max: the parent is root here): the kernel
    // queues datagrams here while the transport waits for a CPU, and what
    // does not fit is dropped before wgd sees it, the tunnel's own with a
    // flood's (tests/tests/flood.rs). Best effort: the plain options,
    // capped by the sysctls, if forcing is refused.
    if setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    if v6 {
        let a = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
        bind(fd.as_raw_fd(), &a)?;
    } else {
        let a = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        bind(fd.as_raw_fd(), &a)?;
    }
    Ok(UdpSocket::from(fd))
}

/// The listening sockets: IPv4 and, where the host has IPv6, IPv6, both on
/// the same port. `port == 0` picks one. Returns the port bound.
pub struct UdpPair {
    pub v4: Option<UdpSocket>,
    pub v6: Option<UdpSocket>,
    pub port: u16,
}

pub fn bind_udp(port: u16, fwmark: u32) -> io::Result<UdpPair> {
    // With a random port, the v6 bind picks it and v4 follows; if that
    // port is taken for v4, try again with another.
    let mut last_err = None;
    for _ in 0..16 {
        let v6 = match udp_socket(true, port, fwmark) {
            Ok(s) => Some(s),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => None,
            Err(e) => return Err(e),
        };
        let chosen = match &v6 {
            Some(s) => s.local_addr()?.port(),
            None => port,
        };
        match udp_socket(false, chosen, fwmark) {
            Ok(v4) => {
                let port = v4.local_addr()?.port();
                return Ok(UdpPair {
                    v4: Some(v4),
                    v6,
                    port,
                });
            }
            Err(e) if port == 0 && e.raw_os_error() == Some(libc::EADDRINUSE) => {
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// Sets the fwmark of an existing socket (CAP_NET_ADMIN: parent only).
pub fn set_fwmark(sock: &UdpSocket, mark: u32) -> io::Result<()> {
    setsockopt(sock, sockopt::Mark, &mark).map_err(io::Error::from)
}

pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{ifname}.sock"))
}

/// Binds the control socket: directory 0755, socket 0600. A stale socket
/// (nobody answering) is replaced; a live one means the interface is
/// already served, which is an error.
pub fn bind_control(ifname: &str) -> io::Result<(UnixListener, PathBuf)> {
    std::fs::create_dir_all(SOCKET_DIR)?;
    std::fs::set_permissions(SOCKET_DIR, std::fs::Permissions::from_mode(0o755))?;
    let path = socket_path(ifname);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    // Create with a restrictive umask so there is no window in which the
    // socket is accessible to others.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(&path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// Deletes a network interface with one RTM_DELLINK request: how the
/// parent fails closed even if a compromised transport still holds the tun
/// descriptor open. Needs CAP_NET_ADMIN, which the parent keeps for this.
pub fn delete_interface(name: &str) -> io::Result<()> {
    use std::mem::size_of;
    let index = nix::net::if_::if_nametoindex(name).map_err(io::Error::from)?;
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let hdr_len = size_of::<libc::nlmsghdr>();
    let ifi_len = size_of::<libc::ifinfomsg>();
    let mut msg = vec![0u8; hdr_len + ifi_len];
    let total = msg.len() as u32;
    msg[0..4].copy_from_slice(&total.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_DELLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family (1), pad (1), type (2), index (4), flags (4), change (4)
    let ifi = hdr_len;
    msg[ifi] = libc::AF_UNSPEC as u8;
    msg[ifi + 4..ifi + 8].copy_from_slice(&(index as i32).to_ne_bytes());
    let sent = nix::sys::socket::send(fd.as_raw_fd(), &msg, nix::sys::socket::MsgFlags::empty())
        .map_err(io::Error::from)?;
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short netlink send",
        ));
    }
    let mut ack = [0u8; 1024];
    let n = nix::sys::socket::recv(
        fd.as_raw_fd(),
        &mut ack,
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    // An NLMSG_ERROR with error 0 is the ACK.
    if n >= hdr_len + 4 {
        let kind = u16::from_ne_bytes([ack[4], ack[5]]);
        if kind == libc::NLMSG_ERROR as u16 {
            let err = i32::from_ne_bytes([
                ack[hdr_len],
                ack[hdr_len + 1],
                ack[hdr_len + 2],
                ack[hdr_len + 3],
            ]);
            if err != 0 {
                return Err(io::Error::from_raw_os_error(-err));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ipv6_zone_is_looked_up() {
        let lo = ifindex("lo").expect("lo exists");
        assert!(lo > 0);
        assert_eq!(ifindex("nosuchif0"), None);
        // As the request parser uses it.
        let text = format!(
            "set=1\npublic_key={}\nendpoint=[fe80::1%lo]:51820\n\n",
            proto::keys::PublicKey([1; 32]).to_hex()
        );
        let req = wg_config::uapi::read_request(&mut text.as_bytes(), &ifindex);
        let Ok(Some(wg_config::uapi::Request::Set(ops))) = req else {
            panic!("{req:?}");
        };
        let [wg_config::uapi::SetOp::Peer(p)] = &ops[..] else {
            panic!("{ops:?}");
        };
        let Some(std::net::SocketAddr::V6(v6)) = p.endpoint else {
            panic!("{:?}", p.endpoint);
        };
        assert_eq!((v6.port(), v6.scope_id()), (51820, lo));
    }
}
