//! An HTTP webhook receiver for the forwarder's tests: a plain HTTP/1.1 listener on a free
//! loopback port that records every request's headers and body, and can fail the first requests
//! and drop a connection mid-body, the faults a SIEM's collector shows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a receiver saw: every request's headers (lower-case names) and body.
#[derive(Default)]
pub struct Received {
    pub requests: Vec<(BTreeMap<String, String>, Vec<u8>)>,
}

/// An HTTP/1.1 receiver: answers 500 to the first `fail_first` requests, reads half the body of
/// the next one and drops the connection, then answers 200.
pub async fn receiver(fail_first: usize) -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Received::default()));
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            n += 1;
            handle(socket, n, fail_first, &seen).await;
        }
    });
    (url, received)
}

async fn handle(mut socket: TcpStream, n: usize, fail_first: usize, seen: &Mutex<Received>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let read = socket.read(&mut chunk).await.unwrap_or(0);
        if read == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..read]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers["content-length"].parse().unwrap();
    if n == fail_first + 1 {
        // Half a batch, then the connection is gone.
        return;
    }
    while buf.len() < header_end + length {
        let read = socket.read(&mut chunk).await.unwrap_or(0);
        if read == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    let status = if n <= fail_first {
        "500 Internal Server Error"
    } else {
        seen.lock()
            .unwrap()
            .requests
            .push((headers, buf[header_end..header_end + length].to_vec()));
        "200 OK"
    };
    let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = socket.write_all(response.as_bytes()).await;
}
