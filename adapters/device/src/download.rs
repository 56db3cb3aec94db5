//! One HTTP GET of the image, from an offset, read chunk by chunk into the agent's buffer.
//!
//! A resumed download sends `Range: bytes=N-`. A server that ignores Range answers 200 with
//! the whole body; the first N bytes are then skipped here, so the state machine always sees
//! the bytes it asked for, in order.

use embedded_svc::http::Method;
use embedded_svc::http::client::Connection;

/// Why a request produced no body to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Network trouble or a 5xx: worth resuming.
    Retry,
    /// The server said no (4xx): retrying will not help.
    Status(u16),
}

/// An open response body.
#[derive(Debug)]
pub struct Body {
    /// Bytes still promised by Content-Length, when the server sent one.
    left: Option<u64>,
    /// Bytes to drop before the requested offset (a 200 to a Range request).
    skip: u64,
}

/// Sends the request and reads the status line and headers.
pub fn open<H: Connection>(http: &mut H, url: &str, offset: u64) -> Result<Body, Refusal> {
    let range = format!("bytes={offset}-");
    let headers = [("Range", range.as_str()), ("Accept-Encoding", "identity")];
    let headers: &[(&str, &str)] = if offset > 0 { &headers } else { &headers[1..] };
    http.initiate_request(Method::Get, url, headers).map_err(|_| Refusal::Retry)?;
    http.initiate_response().map_err(|_| Refusal::Retry)?;
    let status = http.status();
    let skip = match status {
        200 => offset,
        206 => {
            let start = http
                .header("Content-Range")
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(offset) {
                // A range we did not ask for would put bytes at the wrong place.
                return Err(Refusal::Retry);
            }
            0
        }
        408 | 429 | 500..=599 => return Err(Refusal::Retry),
        other => return Err(Refusal::Status(other)),
    };
    Ok(Body { left: http.content_len(), skip })
}

/// Reads the next bytes of the body into `buf`. `Ok(0)`: the body ended as announced.
/// `Err(())`: the connection failed or closed before the announced length.
pub fn read<H: Connection>(http: &mut H, body: &mut Body, buf: &mut [u8]) -> Result<usize, ()> {
    loop {
        if body.left == Some(0) {
            return Ok(0);
        }
        let max = body.left.map_or(buf.len(), |left| buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)));
        let n = http.read(&mut buf[..max]).map_err(|_| ())?;
        if n == 0 {
            return if body.left.is_some() { Err(()) } else { Ok(0) };
        }
        if let Some(left) = body.left.as_mut() {
            *left -= n as u64;
        }
        if body.skip == 0 {
            return Ok(n);
        }
        let drop = usize::try_from(body.skip).unwrap_or(usize::MAX).min(n);
        body.skip -= drop as u64;
        if drop < n {
            buf.copy_within(drop..n, 0);
            return Ok(n - drop);
        }
    }
}
