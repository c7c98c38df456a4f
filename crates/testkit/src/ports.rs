//! Free loopback ports: nothing the kit starts listens on a fixed one.

use std::net::{TcpListener, UdpSocket};

/// A TCP port free on loopback now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("loopback takes a listener on port 0")
}

/// A UDP port free on loopback now, for a gateway's ICE socket (`webrtc.udp_port`):
/// from 10000 to 19999, apart from the ranges [`free_udp_range`] gives for RTP outputs,
/// which their gateways bind only once a stream is published, so that a check here
/// never finds one of those free and then has it taken.
pub fn free_udp_port() -> u16 {
    for _ in 0..200 {
        let port = 10000 + rand::random::<u16>() % 10000;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port from 10000 to 19999");
}

/// A base port with `count` free UDP ports from it, below the kernel's ephemeral range
/// (32768 and up), so that no socket bound to port 0 later (ICE, a player) takes one.
pub fn free_udp_range(count: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (rand::random::<u16>() % 600) * 20;
        let all_free = (0..count).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {count} free UDP ports in a row below 32768");
}
