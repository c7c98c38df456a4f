//! Free loopback ports: nothing the kit starts listens on a fixed one.

use std::net::{TcpListener, UdpSocket};

/// A TCP port free on loopback now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("loopback takes a listener on port 0")
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
