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
    let server = Server::start_with(&["--header-read-timeout", "1", "--max-connections", "64"]);
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
