//! The one UDP socket: a reader task that takes datagrams in batches (`recvmmsg`, through
//! quinn-udp as the WebRTC stack uses it) and hands each to its publisher's queue, and the
//! views each publisher's ICE agent reads and sends through.

use super::table::{Datagram, PeerId, Route};
use super::{Counters, PeerLink};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::runtime::{AsyncUdpSocket, BATCH_SIZE, RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Datagrams queued for one publisher; past this its datagrams are dropped (and
/// counted), so that one slow publisher never holds the reader.
const QUEUE: usize = 256;

/// Bytes per receive buffer at least: the largest datagram. Several coalesced (GRO) take
/// up to 1500 bytes each.
const BUFFER: usize = 64 * 1024;

/// The shared socket.
pub(crate) struct SharedUdp {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// Bound to every address (`0.0.0.0`): sends say their source address.
    wildcard: bool,
}

impl std::fmt::Debug for SharedUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedUdp").field("io", &self.io).finish()
    }
}

impl SharedUdp {
    /// Binds `address`; needs a tokio runtime.
    pub fn bind(address: SocketAddr) -> io::Result<SharedUdp> {
        let socket = std::net::UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let state = UdpSocketState::new(UdpSockRef::from(&io))?;
        Ok(SharedUdp {
            wildcard: address.ip().is_unspecified(),
            io,
            state,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Sends now or not at all. Many peers send through this socket, and tokio wakes only
    /// the last task that waited for it to be writable: a peer that waited could wait for
    /// ever. A full send buffer drops the datagram (counted), as a full link would.
    fn send(&self, transmit: &Transmit<'_>, counters: &Counters) -> io::Result<()> {
        let sent = self.io.try_io(tokio::io::Interest::WRITABLE, || {
            self.state.try_send(UdpSockRef::from(&self.io), transmit)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                counters.udp_send_dropped.inc();
                Ok(())
            }
            other => other,
        }
    }

    /// Reads until `stop`, handing each datagram to its publisher.
    pub async fn read(self: Arc<Self>, shared: Arc<super::Shared>, stop: CancellationToken) {
        let buffer = BUFFER.max(1500 * self.state.gro_segments());
        let mut storage = vec![0u8; buffer * BATCH_SIZE];
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        loop {
            let received = tokio::select! {
                received = futures::future::poll_fn(|cx| {
                    let mut bufs: Vec<IoSliceMut<'_>> =
                        storage.chunks_mut(buffer).map(IoSliceMut::new).collect();
                    self.poll_recv(cx, &mut bufs, &mut meta)
                }) => received,
                _ = stop.cancelled() => return,
            };
            let count = match received {
                Ok(count) => count,
                Err(e) if transient(&e) => continue,
                Err(e) => {
                    tracing::error!("the ICE UDP socket failed: {e}");
                    return;
                }
            };
            let mut table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            for (i, m) in meta.iter().take(count).enumerate() {
                let message = &storage[i * buffer..i * buffer + m.len];
                for datagram in message.chunks(m.stride.max(1)) {
                    deliver(&mut table, &shared.counters, m.addr, m.dst_ip, datagram);
                }
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.io.poll_recv_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let (bufs, meta) = (&mut *bufs, &mut *meta);
            match self.io.try_io(tokio::io::Interest::READABLE, || {
                match self.state.recv(UdpSockRef::from(&self.io), bufs, meta)? {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

/// What a socket serving many peers shrugs off (an ICMP error from one of them).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::TimedOut
    )
}

fn deliver(
    table: &mut super::table::Table,
    counters: &Counters,
    from: SocketAddr,
    to: Option<IpAddr>,
    datagram: &[u8],
) {
    match table.route(from, to, datagram) {
        Route::Peer(inbox) => {
            let datagram = Datagram {
                bytes: datagram.to_vec(),
                from,
            };
            if inbox.try_send(datagram).is_err() {
                counters.udp_queue_full.inc();
            }
        }
        Route::Unknown => {
            counters.udp_unknown.inc();
        }
    }
}

/// One publisher's ICE agent's socket on one local address: what the reader hands it,
/// and sends through the shared socket.
pub(crate) struct UdpView {
    /// The address the agent bound (and made its host candidate of).
    key: SocketAddr,
    socket: Arc<SharedUdp>,
    inbox: Mutex<mpsc::Receiver<Datagram>>,
    link: Arc<PeerLink>,
    /// The last destination sent to, so that each is learnt once.
    last_sent: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for UdpView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpView").field("key", &self.key).finish()
    }
}

impl UdpView {
    pub fn new(link: Arc<PeerLink>, socket: Arc<SharedUdp>, key: SocketAddr) -> UdpView {
        let (tx, rx) = mpsc::channel(QUEUE);
        link.table().add_udp_view(link.id, key, tx);
        UdpView {
            key,
            socket,
            inbox: Mutex::new(rx),
            link,
            last_sent: Mutex::new(None),
        }
    }

    fn peer(&self) -> PeerId {
        self.link.id
    }
}

impl Drop for UdpView {
    fn drop(&mut self) {
        self.link.table().remove_udp_view(self.peer(), self.key);
    }
}

impl AsyncUdpSocket for UdpView {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.key)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        {
            let mut last = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
            if *last != Some(transmit.destination) {
                *last = Some(transmit.destination);
                self.link.table().sent(self.peer(), transmit.destination);
            }
        }
        let from_key = Transmit {
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents: transmit.contents,
            segment_size: transmit.segment_size,
            src_ip: if self.socket.wildcard {
                Some(self.key.ip())
            } else {
                transmit.src_ip
            },
        };
        Poll::Ready(
            self.socket
                .send(&from_key, &self.link.shared.counters)
                .map(|()| transmit.contents.len()),
        )
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        let mut filled = 0;
        let room = bufs.len().min(meta.len());
        while filled < room {
            let next = if filled == 0 {
                match inbox.poll_recv(cx) {
                    Poll::Ready(Some(datagram)) => datagram,
                    // Forgotten (the peer closed): nothing more comes.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            } else {
                match inbox.try_recv() {
                    Ok(datagram) => datagram,
                    Err(_) => break,
                }
            };
            let len = next.bytes.len().min(bufs[filled].len());
            bufs[filled][..len].copy_from_slice(&next.bytes[..len]);
            let mut m = RecvMeta::default();
            m.addr = next.from;
            m.len = len;
            m.stride = len.max(1);
            m.dst_ip = Some(self.key.ip());
            meta[filled] = m;
            filled += 1;
        }
        Poll::Ready(Ok(filled))
    }
}
