//! HTTP clients for the host, both implementing embedded-svc's `http::client::Connection`:
//! [`HostHttp`], a small HTTP/1.1 client over std::net (GET with Range, Content-Length
//! bodies, one connection per request), and [`MemoryHttp`], which serves a synthetic image
//! from memory with no socket at all (for measurements that must see only the agent).
//! Both carry [`HttpFaults`]: corrupt a byte in transit, end the body early, or fail it.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use embedded_svc::http::client::Connection;
use embedded_svc::http::{Headers, Method, Status};
use embedded_svc::io::{ErrorKind, ErrorType, Read, Write};

use super::image::SyntheticImage;

/// Faults applied to response bodies; offsets are positions in the image. `truncate_at` and
/// `drop_at` fire once, `corrupt_at` every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpFaults {
    /// Flip every bit of the image byte at this offset.
    pub corrupt_at: Option<u64>,
    /// End the body (as if the server closed) just before this offset.
    pub truncate_at: Option<u64>,
    /// Fail the read (connection reset) just before this offset.
    pub drop_at: Option<u64>,
}

/// Errors of the host HTTP clients.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("unsupported URL {0:?} (the host client speaks plain http)")]
    Url(String),
    #[error("malformed response: {0}")]
    Response(String),
    #[error("the connection is not in the right phase for this call")]
    Phase,
    #[error("connection reset (injected)")]
    Dropped,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl embedded_svc::io::Error for HttpError {
    fn kind(&self) -> ErrorKind {
        match self {
            HttpError::Io(e) => e.kind().into(),
            HttpError::Dropped => ErrorKind::ConnectionReset,
            _ => ErrorKind::Other,
        }
    }
}

/// Status line and headers of the current response.
#[derive(Debug, Default)]
pub struct ResponseHead {
    status: u16,
    headers: String,
}

impl Status for ResponseHead {
    fn status(&self) -> u16 {
        self.status
    }

    fn status_message(&self) -> Option<&str> {
        None
    }
}

impl Headers for ResponseHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Where the body's bytes come from.
#[derive(Debug)]
enum Source {
    None,
    Socket(BufReader<TcpStream>),
    Memory { image: SyntheticImage, end: u64 },
}

/// A response body with faults applied.
#[derive(Debug)]
pub struct ResponseBody {
    source: Source,
    /// Image offset of the next byte.
    pos: u64,
    faults: Arc<Mutex<HttpFaults>>,
}

impl ErrorType for ResponseBody {
    type Error = HttpError;
}

impl Read for ResponseBody {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let mut max = buf.len() as u64;
        {
            let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            if f.truncate_at.is_some_and(|t| t <= self.pos) {
                f.truncate_at = None;
                self.source = Source::None;
                return Ok(0);
            }
            if f.drop_at.is_some_and(|t| t <= self.pos) {
                f.drop_at = None;
                self.source = Source::None;
                return Err(HttpError::Dropped);
            }
            for limit in [f.truncate_at, f.drop_at].into_iter().flatten() {
                max = max.min(limit - self.pos);
            }
        }
        let max = usize::try_from(max).unwrap_or(buf.len());
        let n = match &mut self.source {
            Source::None => 0,
            Source::Socket(r) => r.read(&mut buf[..max])?,
            Source::Memory { image, end } => {
                let room = usize::try_from(end.saturating_sub(self.pos)).unwrap_or(usize::MAX).min(max);
                image.fill(self.pos, &mut buf[..room])
            }
        };
        let corrupt = self.faults.lock().unwrap_or_else(|e| e.into_inner()).corrupt_at;
        if let Some(c) = corrupt.filter(|c| (self.pos..self.pos + n as u64).contains(c)) {
            buf[(c - self.pos) as usize] ^= 0xff;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Request,
    Response,
}

fn range_start(headers: &[(&str, &str)]) -> u64 {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .and_then(|(_, v)| v.strip_prefix("bytes=")?.split('-').next()?.parse().ok())
        .unwrap_or(0)
}

macro_rules! connection_plumbing {
    ($ty:ty) => {
        impl ErrorType for $ty {
            type Error = HttpError;
        }
        impl Status for $ty {
            fn status(&self) -> u16 {
                self.head.status
            }
            fn status_message(&self) -> Option<&str> {
                None
            }
        }
        impl Headers for $ty {
            fn header(&self, name: &str) -> Option<&str> {
                self.head.header(name)
            }
        }
        impl Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
                if self.phase != Phase::Response {
                    return Err(HttpError::Phase);
                }
                self.body.read(buf)
            }
        }
    };
}

/// An HTTP/1.1 client over std::net.
#[derive(Debug)]
pub struct HostHttp {
    phase: Phase,
    stream: Option<TcpStream>,
    head: ResponseHead,
    body: ResponseBody,
    timeout: Duration,
}

impl HostHttp {
    /// A client whose reads give up after `timeout` of silence; `faults` may be shared with a
    /// test that turns knobs while the agent owns the client.
    pub fn new(timeout: Duration, faults: Arc<Mutex<HttpFaults>>) -> Self {
        HostHttp {
            phase: Phase::Idle,
            stream: None,
            head: ResponseHead::default(),
            body: ResponseBody { source: Source::None, pos: 0, faults },
            timeout,
        }
    }
}

connection_plumbing!(HostHttp);

impl Write for HostHttp {
    fn write(&mut self, buf: &[u8]) -> Result<usize, HttpError> {
        match (&mut self.stream, self.phase) {
            (Some(s), Phase::Request) => Ok(s.write(buf)?),
            _ => Err(HttpError::Phase),
        }
    }

    fn flush(&mut self) -> Result<(), HttpError> {
        Ok(())
    }
}

impl Connection for HostHttp {
    type Headers = ResponseHead;
    type Read = ResponseBody;
    type RawConnectionError = HttpError;
    type RawConnection = Self;

    fn initiate_request<'a>(
        &'a mut self,
        method: Method,
        uri: &'a str,
        headers: &'a [(&'a str, &'a str)],
    ) -> Result<(), HttpError> {
        self.phase = Phase::Idle;
        self.body.source = Source::None;
        let rest = uri.strip_prefix("http://").ok_or_else(|| HttpError::Url(uri.to_string()))?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let with_port = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        let addr = with_port.to_socket_addrs()?.next().ok_or_else(|| HttpError::Url(uri.to_string()))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let method = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            other => return Err(HttpError::Url(format!("{other:?} {uri}"))),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        self.body.pos = range_start(headers);
        self.stream = Some(stream);
        self.phase = Phase::Request;
        Ok(())
    }

    fn is_request_initiated(&self) -> bool {
        self.phase == Phase::Request
    }

    fn initiate_response(&mut self) -> Result<(), HttpError> {
        let stream = self.stream.take().filter(|_| self.phase == Phase::Request).ok_or(HttpError::Phase)?;
        let mut reader = BufReader::with_capacity(8 * 1024, stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::Response(format!("status line {line:?}")))?;
        let mut headers = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if headers.len() + line.len() > 16 * 1024 {
                return Err(HttpError::Response("headers over 16 KiB".into()));
            }
            headers.push_str(&line);
        }
        self.head = ResponseHead { status, headers };
        self.body.source = Source::Socket(reader);
        self.phase = Phase::Response;
        Ok(())
    }

    fn is_response_initiated(&self) -> bool {
        self.phase == Phase::Response
    }

    fn split(&mut self) -> (&ResponseHead, &mut ResponseBody) {
        (&self.head, &mut self.body)
    }

    fn raw_connection(&mut self) -> Result<&mut Self, HttpError> {
        Err(HttpError::Phase)
    }
}

/// An in-memory "server" holding one synthetic image at every URL, honouring Range.
#[derive(Debug)]
pub struct MemoryHttp {
    image: SyntheticImage,
    phase: Phase,
    head: ResponseHead,
    body: ResponseBody,
}

impl MemoryHttp {
    /// Serves `image` with `faults`.
    pub fn new(image: SyntheticImage, faults: Arc<Mutex<HttpFaults>>) -> Self {
        MemoryHttp {
            image,
            phase: Phase::Idle,
            head: ResponseHead::default(),
            body: ResponseBody { source: Source::None, pos: 0, faults },
        }
    }
}

connection_plumbing!(MemoryHttp);

impl Write for MemoryHttp {
    fn write(&mut self, buf: &[u8]) -> Result<usize, HttpError> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), HttpError> {
        Ok(())
    }
}

impl Connection for MemoryHttp {
    type Headers = ResponseHead;
    type Read = ResponseBody;
    type RawConnectionError = HttpError;
    type RawConnection = Self;

    fn initiate_request<'a>(
        &'a mut self,
        _: Method,
        _: &'a str,
        headers: &'a [(&'a str, &'a str)],
    ) -> Result<(), HttpError> {
        self.body.pos = range_start(headers);
        self.phase = Phase::Request;
        Ok(())
    }

    fn is_request_initiated(&self) -> bool {
        self.phase == Phase::Request
    }

    fn initiate_response(&mut self) -> Result<(), HttpError> {
        let (start, len) = (self.body.pos, self.image.len());
        self.head = if start >= len {
            ResponseHead { status: 416, headers: format!("Content-Range: bytes */{len}\r\n") }
        } else if start > 0 {
            let headers =
                format!("Content-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\n", len - start, len - 1);
            ResponseHead { status: 206, headers }
        } else {
            ResponseHead { status: 200, headers: format!("Content-Length: {len}\r\n") }
        };
        self.body.source = Source::Memory { image: self.image.clone(), end: len };
        self.phase = Phase::Response;
        Ok(())
    }

    fn is_response_initiated(&self) -> bool {
        self.phase == Phase::Response
    }

    fn split(&mut self) -> (&ResponseHead, &mut ResponseBody) {
        (&self.head, &mut self.body)
    }

    fn raw_connection(&mut self) -> Result<&mut Self, HttpError> {
        Err(HttpError::Phase)
    }
}
