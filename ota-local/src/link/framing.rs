//! MQTT framing over a device connection (plain TCP or TLS) with rumqttc's 3.1.1 codec: whole
//! packets in, whole packets out, buffered so several packets leave in one write.

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::MAX_PACKET;

/// What a device connection runs over: a TCP socket, or TLS over one.
pub(super) trait DeviceStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DeviceStream for T {}

/// A connection with MQTT framing: rumqttc's codec over a read and a write buffer. Reads and
/// writes never overlap (the connection task does one at a time), so the stream is not split.
pub(super) struct PacketIo {
    stream: Box<dyn DeviceStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl PacketIo {
    pub(super) fn new(stream: Box<dyn DeviceStream>) -> Self {
        PacketIo { stream, rbuf: BytesMut::with_capacity(4096), wbuf: BytesMut::new() }
    }

    /// Bytes queued and not yet flushed.
    pub(super) fn pending(&self) -> usize {
        self.wbuf.len()
    }

    /// The next packet; `None` at a clean end of stream. Cancel-safe: bytes already read stay
    /// in the buffer for the next call.
    pub(super) async fn read(&mut self) -> Result<Option<Packet>, CodecError> {
        loop {
            match Packet::read(&mut self.rbuf, MAX_PACKET) {
                Ok(packet) => return Ok(Some(packet)),
                Err(CodecError::InsufficientBytes(more)) => self.rbuf.reserve(more),
                Err(e) => return Err(e),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return if self.rbuf.is_empty() { Ok(None) } else { Err(CodecError::MalformedPacket) };
            }
        }
    }

    /// Adds a packet to the write buffer; [`PacketIo::flush`] sends it.
    pub(super) fn queue(&mut self, packet: Packet) -> Result<(), CodecError> {
        packet.write(&mut self.wbuf, MAX_PACKET).map(drop)
    }

    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            // TLS holds records back until flushed; TCP's flush does nothing.
            self.stream.flush().await?;
        }
        Ok(())
    }

    pub(super) async fn send(&mut self, packet: Packet) -> Result<(), CodecError> {
        self.queue(packet)?;
        Ok(self.flush().await?)
    }
}
