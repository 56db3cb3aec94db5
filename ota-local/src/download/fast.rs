//! Firmware downloads sent with `sendfile(2)`: the kernel moves the image from the page cache
//! to the socket, so the server never copies it through user memory (with hyper, that copy
//! was 40 % of the server's time under 1,000 concurrent downloads, and most of the gap to
//! nginx, which sends files the same way).
//!
//! [`Downloads::listener`] wraps the HTTP listener of `ota serve`: each new connection whose
//! first bytes are `GET /firmwares/` or `HEAD /firmwares/` is served here, HTTP/1.1 with
//! keep-alive, one request at a time; every other connection goes to axum (the API, the page,
//! MCP) unchanged. The first bytes are peeked, not read, on a task of the connection's own, so
//! a client that sends nothing holds up no other connection. Answers are decided by the same
//! function as the router's (`decide`), so both paths answer every request alike; the
//! integration tests run the whole suite against each.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Downloads, Open, ReplyBody, decide};

/// How long a connection may take to send its first bytes before it is handed to axum (which
/// has its own limits), and how long a kept-alive download connection may sit idle.
const IDLE: Duration = Duration::from_secs(30);
/// The largest request head accepted; a download request is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
const PREFIXES: [&[u8]; 2] = [b"GET /firmwares/", b"HEAD /firmwares/"];

/// A listener for `axum::serve` that serves firmware downloads itself (see the module docs).
#[derive(Debug)]
pub struct DownloadListener {
    others: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl Downloads {
    /// Wraps `tcp`: download connections are served with `sendfile`, the rest are accepted
    /// by axum through the returned listener. Call from within a tokio runtime.
    pub fn listener(&self, tcp: TcpListener) -> io::Result<DownloadListener> {
        let local = tcp.local_addr()?;
        let (tx, others) = mpsc::channel(1024);
        let downloads = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum's own loop does.
                        eprintln!("download listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    // axum stopped accepting (shutdown): so does this loop.
                    break;
                }
                let (downloads, tx) = (downloads.clone(), tx.clone());
                tokio::spawn(async move {
                    if is_download(&stream).await {
                        let _ = serve_connection(stream, &downloads).await;
                    } else {
                        // Dropped if axum stopped accepting meanwhile.
                        let _ = tx.send((stream, addr)).await;
                    }
                });
            }
        });
        Ok(DownloadListener { others, local })
    }
}

impl axum::serve::Listener for DownloadListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.others.recv().await {
            Some(accepted) => accepted,
            // The accept loop never ends while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Whether the connection's first bytes ask for a firmware image, peeked without consuming
/// them. Anything else, or nothing within [`IDLE`], is for axum.
async fn is_download(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        let seen = &buf[..n];
        if PREFIXES.iter().any(|p| seen.starts_with(p)) {
            return true;
        }
        // Still a prefix of one of them: wait for more bytes (peek returns at once while the
        // bytes it saw are unread, so wait for the socket to get more first).
        if !PREFIXES.iter().any(|p| p.starts_with(seen)) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// One request's head, parsed.
struct Request {
    method: Method,
    target: String,
    headers: HeaderMap,
    keep_alive: bool,
}

/// Serves requests on one connection until the client closes it, asks to, or idles.
async fn serve_connection(mut stream: TcpStream, downloads: &Downloads) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let (request, used) = match read_head(&mut stream, &mut buf).await? {
            Head::Request(r, used) => (r, used),
            Head::Closed => return Ok(()),
            Head::Bad(reason) => {
                let body = format!("{reason}\n");
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                return Ok(());
            }
        };
        buf.drain(..used);
        let (path, query) = match request.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (request.target.as_str(), None),
        };
        let reply = decide(&downloads.0, &request.method, path, query, &request.headers, Open::File).await;
        let mut head =
            format!("HTTP/1.1 {} {}\r\n", reply.status.as_u16(), reply.status.canonical_reason().unwrap_or(""));
        let mut push = |name: &str, value: &str| {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        };
        for (name, value) in &reply.headers {
            push(name.as_str(), value);
        }
        let text_len;
        if let ReplyBody::Text(content_type, text) = &reply.body {
            text_len = text.len();
            push("content-type", content_type);
            push("content-length", &text_len.to_string());
        }
        if !request.keep_alive {
            push("connection", "close");
        }
        head.push_str("\r\n");
        // Corked, as nginx's tcp_nopush: the head and the image leave in full packets, not a
        // small packet for the head and then the rest; uncorking sends what is left.
        let _ = rustix::net::sockopt::set_tcp_cork(&stream, true);
        stream.write_all(head.as_bytes()).await?;
        match reply.body {
            ReplyBody::Empty => {}
            ReplyBody::Text(_, text) if request.method != Method::HEAD => stream.write_all(text.as_bytes()).await?,
            ReplyBody::Text(..) => {}
            ReplyBody::Memory(bytes) => stream.write_all(&bytes).await?,
            ReplyBody::File { file, start, count } => send_file(&stream, &file, start, count).await?,
        }
        let _ = rustix::net::sockopt::set_tcp_cork(&stream, false);
        if !request.keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

enum Head {
    /// A request and the bytes of `buf` its head took.
    Request(Request, usize),
    Closed,
    Bad(&'static str),
}

/// Reads until `buf` holds a whole request head (bytes after it stay in `buf`: a pipelined
/// next request).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(used)) => return Ok(parsed(&req, used)),
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Ok(Head::Bad("malformed request")),
            }
            if buf.len() >= MAX_HEAD {
                return Ok(Head::Bad("request head too large"));
            }
        }
        let mut chunk = [0u8; 2048];
        let n = match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(Head::Closed),
        };
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parsed(req: &httparse::Request<'_, '_>, used: usize) -> Head {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Bad("malformed request");
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Head::Bad("malformed request") };
    let mut headers = HeaderMap::new();
    let mut close = version == 0;
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return Head::Bad("malformed header");
        };
        if name == axum::http::header::CONNECTION {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                close = true;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                close = false;
            }
        }
        // A download request has no body (some clients still say `Content-Length: 0`); one
        // with a body would leave its bytes where the next request's head is read.
        let empty = name == axum::http::header::CONTENT_LENGTH && h.value.trim_ascii() == b"0";
        if !empty && (name == axum::http::header::CONTENT_LENGTH || name == axum::http::header::TRANSFER_ENCODING) {
            return Head::Bad("a download request has no body");
        }
        headers.append(name, value);
    }
    Head::Request(Request { method, target: target.to_string(), headers, keep_alive: !close }, used)
}

/// Sends `count` bytes of `file` from `start` with `sendfile(2)`, waiting for the socket
/// whenever its buffer is full.
async fn send_file(stream: &TcpStream, file: &std::fs::File, start: u64, count: u64) -> io::Result<()> {
    let mut offset = start;
    let mut left = count;
    while left > 0 {
        stream.writable().await?;
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        let sent = stream.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(stream, file, Some(&mut offset), chunk).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the image is shorter than it was")),
            Ok(n) => left -= (n as u64).min(left),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
