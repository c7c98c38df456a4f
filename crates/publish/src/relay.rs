//! A lossy link between the publisher and the gateway, for tests: a UDP relay on the
//! publisher's address (loopback unless `--bind` says otherwise) that both ends see in
//! place of the other (their candidates are rewritten to its two sockets). On the way to
//! the gateway it drops a share of the RTP packets (retransmissions too) and delays each
//! packet by a fixed time plus a random time up to a bound, so packets also arrive out
//! of order; STUN, DTLS and RTCP are delayed as well, never dropped.

use anyhow::{Context, Result};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

pub struct Relay {
    /// The socket the publisher sends to (it stands for the gateway).
    toward_publisher: Arc<UdpSocket>,
    /// The socket the gateway sends to (it stands for the publisher).
    toward_gateway: Arc<UdpSocket>,
    publisher: Arc<Mutex<Option<SocketAddr>>>,
    gateway: Arc<Mutex<Option<SocketAddr>>>,
}

/// RTP, not RTCP (RFC 5761: RTCP packet types are 192 to 223).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && (0x80..0xc0).contains(&packet[0]) && !(192..224).contains(&packet[1])
}

impl Relay {
    pub async fn start(
        address: IpAddr,
        loss: f64,
        delay: Duration,
        jitter: Duration,
    ) -> Result<Relay> {
        let toward_publisher = Arc::new(UdpSocket::bind((address, 0)).await?);
        let toward_gateway = Arc::new(UdpSocket::bind((address, 0)).await?);
        let relay = Relay {
            toward_publisher,
            toward_gateway,
            publisher: Arc::default(),
            gateway: Arc::default(),
        };
        // Publisher to gateway: lossy and late.
        let (from, to, gateway) = (
            relay.toward_publisher.clone(),
            relay.toward_gateway.clone(),
            relay.gateway.clone(),
        );
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 2048];
            while let Ok(n) = from.recv(&mut buffer).await {
                let packet = buffer[..n].to_vec();
                let Some(target) = *gateway.lock().unwrap() else {
                    continue;
                };
                let (dropped, delay) = {
                    let mut rng = rand::rng();
                    let dropped = is_rtp(&packet) && rng.random_bool(loss);
                    let delay = if jitter.is_zero() {
                        delay
                    } else {
                        delay + rng.random_range(Duration::ZERO..jitter)
                    };
                    (dropped, delay)
                };
                if dropped {
                    continue;
                }
                let to = to.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = to.send_to(&packet, target).await;
                });
            }
        });
        // Gateway to publisher: as it is.
        let (from, to, publisher) = (
            relay.toward_gateway.clone(),
            relay.toward_publisher.clone(),
            relay.publisher.clone(),
        );
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 2048];
            while let Ok(n) = from.recv(&mut buffer).await {
                let Some(target) = *publisher.lock().unwrap() else {
                    continue;
                };
                let _ = to.send_to(&buffer[..n], target).await;
            }
        });
        Ok(relay)
    }

    /// The publisher's SDP with its candidates pointing at the relay.
    pub fn rewrite_offer(&self, sdp: &str) -> Result<String> {
        let address = self.toward_gateway.local_addr()?;
        Ok(rewrite_candidates(sdp, address, &self.publisher))
    }

    /// The gateway's SDP or candidate line with its candidates pointing at the relay.
    pub fn rewrite_from_gateway(&self, text: &str) -> Result<String> {
        let address = self.toward_publisher.local_addr()?;
        Ok(rewrite_candidates(text, address, &self.gateway))
    }
}

/// Replaces the address and port of every UDP candidate in `text` with `relay`, and
/// keeps the first one replaced in `real`.
fn rewrite_candidates(text: &str, relay: SocketAddr, real: &Mutex<Option<SocketAddr>>) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\r', '\n']);
            let end = &line[body.len()..];
            let Some(at) = body.find("candidate:") else {
                return line.to_string();
            };
            let mut fields: Vec<String> = body[at..].split(' ').map(String::from).collect();
            if fields.len() < 6 || !fields[2].eq_ignore_ascii_case("udp") {
                return line.to_string();
            }
            if let Ok(found) = format!("{}:{}", fields[4], fields[5]).parse::<SocketAddr>() {
                real.lock().unwrap().get_or_insert(found);
            }
            fields[4] = relay.ip().to_string();
            fields[5] = relay.port().to_string();
            format!("{}{}{end}", &body[..at], fields.join(" "))
        })
        .collect()
}

/// `--loss` as a share of packets.
pub fn share(percent: f64) -> Result<f64> {
    (0.0..100.0)
        .contains(&percent)
        .then_some(percent / 100.0)
        .context("--loss-percent is from 0 to 100")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_point_at_the_relay() {
        let real = Mutex::new(None);
        let relay: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=mid:0\r\n";
        let out = rewrite_candidates(sdp, relay, &real);
        assert_eq!(
            out,
            "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=mid:0\r\n"
        );
        assert_eq!(
            *real.lock().unwrap(),
            Some("127.0.0.1:5000".parse().unwrap())
        );
        assert!(is_rtp(&[0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_rtp(&[0x80, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    }
}
