//! Clients that never finish their requests: half-sent headers and stalled
//! uploads are cut off after their timeouts, and everyone else is served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::{Server, ROOT_TOKEN};

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

#[test]
fn half_sent_headers_never_lock_out_other_clients() {
    // One address may take the whole pool here: only the header timeout
    // frees it.
    let server = Server::start_with(&[
        "--header-read-timeout",
        "1",
        "--max-connections",
        "64",
        "--max-connections-per-address",
        "64",
    ]);
    // Far more connections than the server serves at once, each stopping
    // in the middle of its headers.
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut socket = TcpStream::connect(address(&server)).unwrap();
        socket
            .write_all(b"GET /api/v4/user HTTP/1.1\r\nHost: x\r\nPRIVATE-TO")
            .unwrap();
        stalled.push(socket);
    }
    // Someone else still gets answers, once the stalled ones were cut off.
    let started = Instant::now();
    let response = e2e::client()
        .get(server.url("/user"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    eprintln!("answered after {:?}", started.elapsed());
    // The stalled connections were closed by the server.
    let mut first = stalled.swap_remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    let read = first.read_to_end(&mut rest);
    assert!(read.is_ok(), "{read:?}");
}

/// One address holds at most its share of the connections (here 8 of 64):
/// the rest of its half-sent requests are answered `503` at once, and
/// another address is served without waiting for any timeout.
#[test]
fn one_address_cannot_take_every_connection() {
    let server = Server::start_with(&["--max-connections", "64"]);
    let mut stalled = Vec::new();
    for _ in 0..641 {
        let mut socket = TcpStream::connect(address(&server)).unwrap();
        // Refused connections may be closed before this is written.
        let _ = socket.write_all(b"GET /api/v4/user HTTP/1.1\r\nHost: x\r\nPRIVATE-TO");
        stalled.push(socket);
    }
    let mut refused = stalled.pop().unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = refused.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("too many connections"), "{answer:?}");

    // The 30 s header timeout has not cut anyone off yet.
    let started = Instant::now();
    let response = e2e::client_from("127.0.0.2")
        .get(server.url("/user"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    eprintln!(
        "another address answered after {:?} beside 641 half-sent requests",
        started.elapsed()
    );
}

/// The head of a multipart import whose file then comes as slowly as the
/// caller sends it.
fn upload_head(token: &str) -> Vec<u8> {
    let boundary = "XyZ";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\ntrickled\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tar.gz\"\r\n\
         Content-Type: application/gzip\r\n\r\n"
    );
    let mut request = format!(
        "POST /api/v4/projects/import HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: {token}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n\r\n{head}"
    )
    .into_bytes();
    request.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
    request
}

/// A body that keeps coming, a byte at a time, below the minimum rate is
/// cut with `408` once a window has passed, long before the idle timeout.
#[test]
fn a_trickled_upload_is_cut_with_408() {
    let server = Server::start_with(&["--body-rate-window", "2", "--body-min-rate", "1000"]);
    let mut socket = TcpStream::connect(address(&server)).unwrap();
    socket.write_all(&upload_head(ROOT_TOKEN)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        if socket.write_all(b"x").is_err() {
            break;
        }
        let mut buffer = [0u8; 4096];
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("408 Request Timeout"), "{answer:?}");
    eprintln!("cut after {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(200));
    let imports = server.data_dir.join("blobs/imports");
    let left = std::fs::read_dir(&imports).map_or(0, |d| d.count());
    assert_eq!(left, 0, "an upload was left in {}", imports.display());
}

/// One user's uploads under way at once are capped; the one past the cap
/// is answered `429` at once, and the slots come back when they end.
#[test]
fn one_user_cannot_hold_every_upload() {
    let server = Server::start();
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut socket = TcpStream::connect(address(&server)).unwrap();
        socket.write_all(&upload_head(ROOT_TOKEN)).unwrap();
        held.push(socket);
    }
    // The server has read their heads once a request behind them is seen.
    std::thread::sleep(Duration::from_millis(500));
    let archive = e2e::tar_gz(&[("VERSION", b"0.2.4"), ("tree/project.json", b"{}")]);
    let refused = server
        .try_import(ROOT_TOKEN, archive.clone(), &[("path", "seventeenth")])
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(
        body["message"]["error"],
        "This endpoint has been requested too many times. Try again later."
    );
    // Another user is not held back by them.
    let (_, bob) = server.create_user("bob");
    let started = Instant::now();
    let other = server
        .try_import(&bob, archive.clone(), &[("path", "bobs")])
        .unwrap();
    assert_eq!(other.status(), 201);
    eprintln!(
        "another user's upload answered after {:?} beside 16 held",
        started.elapsed()
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = server
            .try_import(ROOT_TOKEN, archive.clone(), &[("path", "after")])
            .unwrap();
        if again.status() == 201 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(Instant::now() < deadline, "the slots never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stalled_upload_is_cut_off_and_leaves_nothing() {
    let server = Server::start_with(&["--body-idle-timeout", "1"]);
    let mut socket = TcpStream::connect(address(&server)).unwrap();
    let boundary = "XyZ";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\nstalled\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tar.gz\"\r\n\
         Content-Type: application/gzip\r\n\r\n"
    );
    let request = format!(
        "POST /api/v4/projects/import HTTP/1.1\r\nHost: x\r\nPRIVATE-TOKEN: {ROOT_TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n\r\n{head}"
    );
    socket.write_all(request.as_bytes()).unwrap();
    socket.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    // Then nothing: the server answers or hangs up by itself.
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    let read = socket.read_to_end(&mut answer);
    assert!(
        read.is_ok(),
        "the server kept the stalled upload open: {read:?}"
    );
    let imports = server.data_dir.join("blobs/imports");
    let left = std::fs::read_dir(&imports).map_or(0, |d| d.count());
    assert_eq!(left, 0, "an upload was left in {}", imports.display());
    // And the server goes on serving.
    let response = e2e::client()
        .get(server.url("/user"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}
