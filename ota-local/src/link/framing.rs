//! MQTT framing over a TCP connection with rumqttc's 3.1.1 codec: whole packets in, whole
//! packets out, buffered so several packets leave in one write.

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::MAX_PACKET;

/// A socket with MQTT framing: rumqttc's codec over a read and a write buffer.
pub(super) struct PacketIo {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl PacketIo {
    pub(super) fn new(stream: TcpStream) -> Self {
        let (reader, writer) = stream.into_split();
        PacketIo { reader, writer, rbuf: BytesMut::with_capacity(4096), wbuf: BytesMut::new() }
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
            if self.reader.read_buf(&mut self.rbuf).await? == 0 {
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
            self.writer.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    pub(super) async fn send(&mut self, packet: Packet) -> Result<(), CodecError> {
        self.queue(packet)?;
        Ok(self.flush().await?)
    }
}
