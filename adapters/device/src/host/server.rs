//! A small HTTP/1.1 image server on 127.0.0.1 for tests and simulations: serves synthetic
//! images by path, honours `Range: bytes=N-`, and can drop a response part-way.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::image::SyntheticImage;

/// Server-side faults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFaults {
    /// Close the first response that reaches this image offset, there.
    pub drop_once_at: Option<u64>,
}

#[derive(Debug, Default)]
struct Shared {
    images: BTreeMap<String, SyntheticImage>,
    faults: ServerFaults,
    /// (path, first byte asked for, status) of every request.
    requests: Vec<(String, u64, u16)>,
}

/// The server; stops when dropped.
#[derive(Debug)]
pub struct ImageServer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ImageServer {
    /// Starts on a free loopback port.
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(conn, &s));
                }
            }
        });
        Ok(ImageServer { addr, shared, stop, thread: Some(thread) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `image` at `path` (starting with `/`); returns its URL.
    pub fn put(&self, path: &str, image: SyntheticImage) -> String {
        self.lock().images.insert(path.to_string(), image);
        format!("http://{}{path}", self.addr)
    }

    /// Sets the faults for the next responses.
    pub fn set_faults(&self, faults: ServerFaults) {
        self.lock().faults = faults;
    }

    /// Every request served so far: (path, first byte asked for, status).
    pub fn requests(&self) -> Vec<(String, u64, u16)> {
        self.lock().requests.clone()
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, shared: &Mutex<Shared>) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut start = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            start = v.trim().strip_prefix("bytes=").and_then(|r| r.split('-').next()?.parse().ok()).unwrap_or(0);
        }
    }
    let (image, drop_at) = {
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let image = s.images.get(&path).cloned();
        let status = match &image {
            None => 404,
            Some(i) if start >= i.len() => 416,
            Some(_) if start > 0 => 206,
            Some(_) => 200,
        };
        s.requests.push((path.clone(), start, status));
        let drop_at = s.faults.drop_once_at.filter(|at| image.as_ref().is_some_and(|i| *at >= start && *at < i.len()));
        if drop_at.is_some() {
            s.faults.drop_once_at = None;
        }
        (image, drop_at)
    };
    let mut out = conn;
    let Some(image) = image.filter(|i| start < i.len()) else {
        let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let len = image.len();
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nConnection: close\r\n\r\n",
            len - start,
            len - 1
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n")
    };
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let end = drop_at.unwrap_or(len);
    let mut buf = [0u8; 16 * 1024];
    let mut pos = start;
    while pos < end {
        let want = usize::try_from(end - pos).unwrap_or(buf.len()).min(buf.len());
        let n = image.fill(pos, &mut buf[..want]);
        if out.write_all(&buf[..n]).is_err() {
            return;
        }
        pos += n as u64;
    }
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}
