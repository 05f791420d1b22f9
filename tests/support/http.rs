//! A plain HTTP/1.1 client over `std::net::TcpStream` for the HTTP tests:
//! keep-alive (many requests on one connection), `Content-Length` and
//! chunked responses, and a chunk-at-a-time reader for streams, so a test
//! sees exactly the framing a server writes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One response, its body read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    /// Connects to `addr` (`127.0.0.1:port`); every read gives up after
    /// `timeout`.
    pub fn open(addr: &str, timeout: Duration) -> Conn {
        let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(timeout)).unwrap();
        tcp.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(tcp),
            host: addr.to_string(),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Sends a request with a `Content-Length` body (none for an empty GET).
    pub fn send(&mut self, method: &str, path: &str, body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if !(body.is_empty() && method == "GET") {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
    }

    /// Sends a request with extra header lines (`Name: value`).
    pub fn send_with(&mut self, method: &str, path: &str, headers: &[&str], body: &[u8]) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
    }

    /// Sends a request and reads the whole response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Reply {
        self.send(method, path, body);
        self.read_reply()
    }

    /// `POST path` with a JSON body.
    pub fn post(&mut self, path: &str, body: &str) -> Reply {
        self.request("POST", path, body.as_bytes())
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, b"")
    }

    /// Reads a response's status line and headers, skipping interim (1xx)
    /// responses such as `100 Continue`.
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            let head = self.read_one_head();
            if !(100..200).contains(&head.0) {
                return head;
            }
        }
    }

    fn read_one_head(&mut self) -> (u16, Vec<(String, String)>) {
        let line = self.line();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return (status, headers);
            }
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }

    /// Reads a whole response.
    pub fn read_reply(&mut self) -> Reply {
        let (status, headers) = self.read_head();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(len) = find("content-length") {
            let mut body = vec![0; len.parse().expect("content-length")];
            self.reader.read_exact(&mut body).expect("read body");
            body
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            while let Some(chunk) = self.read_chunk() {
                body.extend(chunk);
            }
            body
        } else {
            Vec::new()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Reads one chunk of a chunked body; `None` at the last (empty) chunk,
    /// after its trailers.
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.line();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            // Trailers, then the blank line.
            while !self.line().is_empty() {}
            return None;
        }
        let mut chunk = vec![0; size];
        self.reader.read_exact(&mut chunk).expect("read chunk");
        let end = self.line();
        assert!(end.is_empty(), "chunk not followed by CRLF: {end:?}");
        Some(chunk)
    }

    /// Whether the server has closed the connection (a read returns EOF
    /// rather than timing out or giving data).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
            || matches!(self.reader.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        assert!(line.ends_with("\r\n"), "truncated line {line:?}");
        line.truncate(line.len() - 2);
        line
    }
}

/// base64 of `s`, as the gateway wants keys and values.
pub fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `header` IDs that differ between two clusters replaced by placeholders,
/// recursively, so two servers' replies compare equal when they mean the
/// same.
pub fn normalise(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                match k.as_str() {
                    "cluster_id" | "member_id" | "raft_term" => *val = Value::from("<id>"),
                    _ => normalise(val),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}
