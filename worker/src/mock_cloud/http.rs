//! A minimal HTTP/1.1 server side: read one request (Content-Length bodies), write one
//! response. Enough for the mock; strict about sizes so a bad client cannot exhaust memory.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Largest request head (request line + headers) accepted.
const HEAD_SIZE_MAX_BYTES: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub method: String,
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What reading produced.
#[derive(Debug)]
pub(super) enum ReadOutcome {
    Request(Request),
    /// The peer closed, the connection idled out, or the server is stopping.
    Closed,
    /// A request the server answers with an error status and then closes.
    Reject {
        status: u16,
        reason: &'static str,
    },
}

/// Reads one request. `buf` carries bytes over between pipelined requests. `keep_waiting`
/// is asked on every read timeout (the stream must have one) and ends the wait when false.
pub(super) fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    body_size_max_bytes: usize,
    keep_waiting: &dyn Fn(Instant) -> bool,
) -> io::Result<ReadOutcome> {
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > HEAD_SIZE_MAX_BYTES {
            return Ok(ReadOutcome::Reject {
                status: 431,
                reason: "request head too large",
            });
        }
        if !fill(stream, buf, keep_waiting)? {
            return Ok(ReadOutcome::Closed);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let Some(mut request) = parse_head(&head) else {
        return Ok(ReadOutcome::Reject {
            status: 400,
            reason: "malformed request head",
        });
    };
    if request.header("transfer-encoding").is_some() {
        return Ok(ReadOutcome::Reject {
            status: 411,
            reason: "chunked bodies are not supported",
        });
    }
    let length = match request
        .header("content-length")
        .map(str::trim)
        .map(str::parse::<usize>)
    {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Ok(ReadOutcome::Reject {
                status: 400,
                reason: "bad content-length",
            })
        }
    };
    if length > body_size_max_bytes {
        return Ok(ReadOutcome::Reject {
            status: 413,
            reason: "request body too large",
        });
    }
    if length > buf.len()
        && request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    while buf.len() < length {
        if !fill(stream, buf, keep_waiting)? {
            return Ok(ReadOutcome::Closed);
        }
    }
    request.body = buf.drain(..length).collect();
    Ok(ReadOutcome::Request(request))
}

/// Reads more bytes; false on EOF or when `keep_waiting` says stop.
fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    keep_waiting: &dyn Fn(Instant) -> bool,
) -> io::Result<bool> {
    let mut chunk = [0_u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if !keep_waiting(Instant::now()) {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn parse_head(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let connection = headers
        .iter()
        .find(|(n, _)| n == "connection")
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some("close") => false,
        Some("keep-alive") => true,
        _ => version == "HTTP/1.1",
    };
    Some(Request {
        method: method.to_owned(),
        path: percent_decode(path),
        query: parse_query(query),
        headers,
        body: Vec::new(),
        keep_alive,
    })
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// Decodes `%XX` escapes; malformed escapes are kept literally.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A response to write.
#[derive(Debug)]
pub(super) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }
}

pub(super) fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
        response.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&response.body);
    stream.write_all(&bytes)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_and_query() {
        let head = "POST /device-api/v1/image-queries?detector_id=det_1&metadata=eyJ9%3D&x=a+b HTTP/1.1\r\nHost: h\r\nX-Api-Token: t";
        let r = parse_head(head).expect("parse");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/device-api/v1/image-queries");
        assert_eq!(r.param("metadata"), Some("eyJ9="));
        assert_eq!(r.param("x"), Some("a b"));
        assert_eq!(r.header("x-api-token"), Some("t"));
        assert!(r.keep_alive);
        assert!(parse_head("GARBAGE").is_none());
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }
}
