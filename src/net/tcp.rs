//! ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing): the one listener on
//! `webrtc.tcp_port` and the connections the HTTP listener hands over. The first frame's
//! STUN username says whose a connection is; it goes, with that frame to be read again,
//! to the publisher's listener view, which its ICE agent accepts from.

use super::table::{Accepted, PeerId, TcpVia};
use super::{PeerLink, Shared, stun};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream};

/// How long a new connection on the ICE port may take to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// A read at least this long carries media, not an ICE check.
const MEDIA_READ: usize = 300;

/// Connections waiting for a publisher's agent to accept them.
const QUEUE: usize = 8;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstBytes {
    /// A framed STUN message (RFC 4571: two bytes of length, then STUN).
    Stun,
    /// Anything else (HTTP, TLS).
    Other,
    /// Not enough bytes to tell yet.
    Unsure,
}

/// Tells a framed STUN message from HTTP and TLS by up to 10 first bytes.
pub fn first_bytes(bytes: &[u8]) -> FirstBytes {
    // A frame is shorter than 1,280 bytes here: its first byte is small, where HTTP
    // starts with a letter and TLS with 0x16.
    match bytes.first() {
        None => FirstBytes::Unsure,
        Some(b) if *b > 0x05 => FirstBytes::Other,
        Some(_) if bytes.len() < 10 => FirstBytes::Unsure,
        Some(_) if stun::looks_like_stun(&bytes[2..]) => FirstBytes::Stun,
        Some(_) => FirstBytes::Other,
    }
}

/// Whether `stream` starts with a framed STUN message, read without taking its bytes
/// (`peek`). `None`: it sent too little within `FIRST_FRAME_TIMEOUT`.
pub async fn starts_with_stun(stream: &TcpStream) -> Option<bool> {
    let look = async {
        let mut head = [0u8; 10];
        loop {
            let n = stream.peek(&mut head).await.ok()?;
            if n == 0 {
                return None;
            }
            match first_bytes(&head[..n]) {
                FirstBytes::Stun => return Some(true),
                FirstBytes::Other => return Some(false),
                // The rest of the header is on its way: peek returns at once with what
                // is there, so wait a little before looking again.
                FirstBytes::Unsure => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(FIRST_FRAME_TIMEOUT, look)
        .await
        .ok()
        .flatten()
}

/// Reads the first frame of `stream` and hands the connection to the publisher it names;
/// closes it when it names nobody.
pub(crate) async fn hand_over(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    via: TcpVia,
) {
    let read = async {
        let mut stream = stream;
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await.ok()?;
        let mut first = vec![0u8; 2 + u16::from_be_bytes(length) as usize];
        first[..2].copy_from_slice(&length);
        stream.read_exact(&mut first[2..]).await.ok()?;
        Some((stream, first))
    };
    let Ok(Some((stream, first))) = tokio::time::timeout(FIRST_FRAME_TIMEOUT, read).await else {
        shared.counters.tcp_unknown.inc();
        return;
    };
    let Some(ufrag) = stun::request_ufrag(&first[2..]) else {
        shared.counters.tcp_unknown.inc();
        return;
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let target = shared.table().tcp_target(&ufrag, local.ip());
    let Some((key, view, media_via)) = target else {
        tracing::debug!(%remote, "ICE over TCP for nobody known: closed");
        shared.counters.tcp_unknown.inc();
        return;
    };
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let replay = ReplayStream {
        first: Mutex::new(Some(first)),
        read_half,
        write_half: tokio::sync::Mutex::new(write_half),
        local_addr: key,
        peer_addr: remote,
        via,
        media_via,
    };
    let _ = view.try_send((Arc::new(replay), remote));
}

/// Accepts on `webrtc.tcp_port` until `stop`; each connection is read in a task of its
/// own, so that a silent one holds nobody.
pub(crate) async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, remote)) => {
                tokio::spawn(hand_over(shared.clone(), stream, remote, TcpVia::IcePort));
            }
            Err(e) => {
                tracing::warn!("ICE TCP accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One publisher's ICE agent's TCP listener on one local address: it accepts the
/// connections the mux hands it.
pub(crate) struct TcpListenerView {
    key: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    link: Arc<PeerLink>,
}

impl std::fmt::Debug for TcpListenerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListenerView")
            .field("key", &self.key)
            .finish()
    }
}

impl TcpListenerView {
    pub fn new(link: Arc<PeerLink>, key: SocketAddr) -> TcpListenerView {
        let (tx, rx) = mpsc::channel(QUEUE);
        link.table().add_tcp_view(link.id, key, tx);
        TcpListenerView {
            key,
            inbox: tokio::sync::Mutex::new(rx),
            link,
        }
    }

    fn peer(&self) -> PeerId {
        self.link.id
    }
}

impl Drop for TcpListenerView {
    fn drop(&mut self) {
        self.link.table().remove_tcp_view(self.peer(), self.key);
    }
}

impl AsyncTcpListener for TcpListenerView {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>>
    {
        Box::pin(async move {
            let mut inbox = self.inbox.lock().await;
            match inbox.recv().await {
                Some((stream, remote)) => Ok((stream, remote)),
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.key)
    }
}

/// A connection whose first frame was already read: reads give it first.
#[derive(Debug)]
pub(crate) struct ReplayStream {
    first: Mutex<Option<Vec<u8>>>,
    read_half: tokio::net::tcp::OwnedReadHalf,
    write_half: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    /// The listener view's address: the agent matches the connection to its candidate
    /// by it.
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    via: TcpVia,
    /// Marked with `via` when a read brings media: the path the publisher's media takes.
    media_via: Arc<AtomicU8>,
}

impl AsyncTcpStream for ReplayStream {
    fn read<'a, 'b>(
        &'a self,
        buf: &'b mut [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            {
                let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(bytes) = first.as_mut() {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    bytes.drain(..n);
                    if bytes.is_empty() {
                        *first = None;
                    }
                    return Ok(n);
                }
            }
            loop {
                self.read_half.readable().await?;
                match self.read_half.try_read(buf) {
                    Ok(n) => {
                        // Checks are small; media packets are not.
                        if n >= MEDIA_READ {
                            self.media_via.store(self.via.code(), Ordering::Relaxed);
                        }
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn write_all<'a, 'b>(
        &'a self,
        buf: &'b [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            self.write_half.lock().await.write_all(buf).await
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn framed_stun_is_told_from_http_and_tls() {
        let request = framed(&stun::tests::binding_request("abcd:efgh"));
        assert_eq!(first_bytes(&request), FirstBytes::Stun);
        assert_eq!(first_bytes(&request[..4]), FirstBytes::Unsure);
        assert_eq!(first_bytes(b""), FirstBytes::Unsure);
        assert_eq!(first_bytes(b"GET / HTTP/1.1\r\n"), FirstBytes::Other);
        assert_eq!(first_bytes(b"PRI * HTTP/2.0"), FirstBytes::Other);
        assert_eq!(
            first_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            FirstBytes::Other
        );
        // Small first byte, but no STUN cookie.
        assert_eq!(
            first_bytes(&[0, 20, 0, 1, 0, 0, 1, 2, 3, 4]),
            FirstBytes::Other
        );
    }
}
