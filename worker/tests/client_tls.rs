//! Which CAs the cloud client trusts, against a real TLS server on 127.0.0.1 whose
//! certificate a private CA (generated here) signed: the situation of an edge site behind a
//! TLS-inspecting proxy, whose CA is installed on the box, and where the Groundlight SDK
//! (urllib3 over OpenSSL, trusting the system store) works.
//!
//! Cases that depend on the process environment (`SSL_CERT_FILE`, which replaces the
//! system store as it does for OpenSSL) run this test binary again as a child process with
//! that environment, one test each, so no test changes the environment of another.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use escalation_queue_worker::{
    ApiToken, AttemptContext, ClientConfig, ConfigError, DeliveryError, Destination, Escalation,
    GroundlightClient, ImageSource, ProxyRoute, ProxySource, ProxyUrl, TlsRoots,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The environment variable naming the PKI directory a child process serves from.
const CHILD_PKI: &str = "EQ_TLS_TEST_PKI";

/// A private CA and a server certificate it signed for 127.0.0.1, written as `ca.pem`,
/// `server.pem` and `server.key` in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn generate() -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "escalation-queue test inspection CA",
        );
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("server cert");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca.pem");
        std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("server.pem");
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("server.key");
        Self { dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// An HTTPS server on 127.0.0.1 answering each submission 201 with a complete ImageQuery
/// (the one asked for). Counts the requests it read, which only happens after a handshake.
struct TlsServer {
    addr: SocketAddr,
    requests: Arc<Mutex<usize>>,
}

impl TlsServer {
    fn start(pki_dir: &Path) -> Self {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki_dir.join("server.pem"))
                .expect("server.pem")
                .collect::<Result<_, _>>()
                .expect("certs");
        let key = PrivateKeyDer::from_pem_file(pki_dir.join("server.key")).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(0));
        let count = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let config = Arc::clone(&config);
                let count = Arc::clone(&count);
                std::thread::spawn(move || serve_tls(stream, config, &count));
            }
        });
        Self { addr, requests }
    }

    fn endpoint(&self) -> String {
        format!("https://{}/device-api", self.addr)
    }

    fn requests(&self) -> usize {
        *self.requests.lock().expect("lock")
    }
}

fn serve_tls(stream: TcpStream, config: Arc<rustls::ServerConfig>, count: &Mutex<usize>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        // A failed handshake (the client refused our certificate) ends here.
        if tls.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if tls.read_exact(&mut body).is_err() {
        return;
    }
    *count.lock().expect("lock") += 1;
    let target = head.split_whitespace().nth(1).unwrap_or_default();
    let id = target
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("image_query_id="))
        .unwrap_or_default();
    let answer = serde_json::json!({
        "id": id, "type": "image_query", "created_at": "2026-01-01T00:00:00Z", "query": "",
        "detector_id": "det_tls", "result_type": "binary_classification", "result": null,
        "patience_time": 30.0, "confidence_threshold": 0.9, "metadata": null, "rois": null,
        "text": null,
    })
    .to_string();
    let _ = write!(
        tls,
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// An HTTP CONNECT proxy on 127.0.0.1 that records each tunnel's target and relays bytes.
struct ConnectProxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || tunnel(client, &seen));
            }
        });
        Self { addr, targets }
    }
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    };
    seen.lock().expect("lock").push(target.to_owned());
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    let _ = (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let mut up = upstream.try_clone().expect("clone");
    let buffered = reader.buffer().to_vec();
    let forward = std::thread::spawn(move || {
        let _ = up.write_all(&buffered);
        let _ = std::io::copy(&mut reader, &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut upstream = upstream;
    let mut down = client;
    let _ = std::io::copy(&mut upstream, &mut down);
    let _ = down.shutdown(Shutdown::Both);
    let _ = forward.join();
}

fn config_for(endpoint: &str) -> ClientConfig {
    let mut config = ClientConfig::new(ApiToken::new("api_2tlstesttoken").expect("token"));
    config.endpoint = endpoint.to_owned();
    config.connect_timeout_first_ms = 3_000;
    config.read_timeout_ms = 5_000;
    config
}

fn submit(config: ClientConfig) -> Result<String, DeliveryError> {
    let client = GroundlightClient::new(config).expect("client");
    let esc = Escalation::new(
        "det_tls",
        ImageSource::Inline(Bytes::from_static(b"\xff\xd8\xff tls")),
    );
    client
        .submit(&esc, AttemptContext::FIRST)
        .map(|d| d.image_query.id)
}

#[track_caller]
fn assert_refused_certificate(result: &Result<String, DeliveryError>, server: &TlsServer) {
    let error = result
        .as_ref()
        .expect_err("the private CA must not be trusted");
    let text = format!("{error} {error:?}").to_ascii_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer") || text.contains("tls"),
        "expected a certificate error, got {error:?}"
    );
    assert_eq!(
        server.requests(),
        0,
        "no request may pass a refused handshake"
    );
}

/// Story: a private (inspection) CA is not trusted by default, unless it is in the system
/// store; `cloud.ca_file` adds it on top of the system store, and the request goes through.
#[test]
fn a_private_ca_is_refused_by_default_and_trusted_when_given_as_ca_file() {
    let pki = Pki::generate();
    let server = TlsServer::start(pki.dir.path());
    assert_refused_certificate(&submit(config_for(&server.endpoint())), &server);
    let mut config = config_for(&server.endpoint());
    config.ca_file = Some(pki.ca_file());
    let id = submit(config).expect("delivered with cloud.ca_file");
    assert!(id.starts_with("iq_"), "{id}");
    assert_eq!(server.requests(), 1);
}

/// Story: edge boxes route through an HTTP proxy; the TLS session to the endpoint runs
/// through the CONNECT tunnel and is verified against the same trust (here `ca_file`).
#[test]
fn through_a_connect_proxy_the_endpoint_is_verified_with_the_same_trust() {
    let pki = Pki::generate();
    let server = TlsServer::start(pki.dir.path());
    let proxy = ConnectProxy::start();
    let route = |config: &mut ClientConfig| {
        config.proxy = ProxyRoute::Via {
            proxy: ProxyUrl::new(format!("http://{}", proxy.addr)).expect("proxy url"),
            source: ProxySource::Config,
        };
    };
    let mut refused = config_for(&server.endpoint());
    route(&mut refused);
    assert_refused_certificate(&submit(refused), &server);
    let mut config = config_for(&server.endpoint());
    route(&mut config);
    config.ca_file = Some(pki.ca_file());
    submit(config).expect("delivered through the proxy");
    assert_eq!(server.requests(), 1);
    let targets = proxy.targets.lock().expect("lock").clone();
    assert_eq!(targets, [server.addr.to_string(), server.addr.to_string()]);
}

/// Story: a CA file that cannot be used is a configuration error when the client is built
/// (at start), naming the file, not a TLS failure at the first request.
#[test]
fn an_unusable_ca_file_is_refused_when_the_client_is_built() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just text\n").expect("write");
    let pki = Pki::generate();
    let cases = [
        (
            dir.path().join("missing.pem"),
            TlsRoots::System,
            "cannot read it",
        ),
        (not_pem, TlsRoots::System, "no PEM CERTIFICATE"),
        (pki.ca_file(), TlsRoots::Bundled, "tls_roots"),
    ];
    for (path, roots, needle) in cases {
        let mut config = config_for("https://127.0.0.1:9/device-api");
        config.tls_roots = roots;
        config.ca_file = Some(path.clone());
        match GroundlightClient::new(config) {
            Err(error @ ConfigError::InvalidCaFile { .. }) => {
                let text = error.to_string();
                assert!(text.contains(needle), "{text}");
                assert!(text.contains(&path.display().to_string()), "{text}");
            }
            other => panic!("{path:?}: expected InvalidCaFile, got {other:?}"),
        }
    }
}

/// Runs `test` in a child process of this test binary with `SSL_CERT_FILE` set to the
/// private CA and [`CHILD_PKI`] naming the PKI directory; asserts it passed.
fn run_in_child_with_ssl_cert_file(test: &str, pki: &Pki) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("SSL_CERT_FILE", pki.ca_file())
        .env_remove("SSL_CERT_DIR")
        .env(CHILD_PKI, pki.dir.path())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {test} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Story: Python (OpenSSL) takes its trust store from `SSL_CERT_FILE` when it is set, so
/// an operator who points it at a bundle with the inspection CA makes the SDK work; the
/// default trust (`system`) honours it the same way, and `bundled` deliberately does not.
#[test]
fn ssl_cert_file_replaces_the_system_store_like_openssl_and_bundled_ignores_it() {
    if std::env::var_os(CHILD_PKI).is_none() {
        let pki = Pki::generate();
        run_in_child_with_ssl_cert_file(
            "ssl_cert_file_replaces_the_system_store_like_openssl_and_bundled_ignores_it",
            &pki,
        );
        return;
    }
    let pki_dir = PathBuf::from(std::env::var_os(CHILD_PKI).expect("pki dir"));
    let server = TlsServer::start(&pki_dir);
    let id = submit(config_for(&server.endpoint())).expect("trusted through SSL_CERT_FILE");
    assert!(id.starts_with("iq_"), "{id}");
    assert_eq!(server.requests(), 1);
    let mut bundled = config_for(&server.endpoint());
    bundled.tls_roots = TlsRoots::Bundled;
    let before = server.requests();
    let error = submit(bundled).expect_err("bundled roots ignore SSL_CERT_FILE");
    assert!(
        format!("{error:?}")
            .to_ascii_lowercase()
            .contains("certificate")
            || error.to_string().to_ascii_lowercase().contains("tls"),
        "{error:?}"
    );
    assert_eq!(server.requests(), before);
}
