//! Handshakes between [`ServerTls`] and [`ClientTls`] over an in-memory
//! pipe, with certificates generated here (none is committed): mutual TLS,
//! refusals, reloads, and the flag checks with etcd's messages.

use super::*;
use crate::server::config::parse_tls_version;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA that signs certificates for the tests.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// A certificate for `cn`, valid for localhost and 127.0.0.1: (cert, key) PEM.
    fn issue(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `cn`'s certificate from `ca` (and `ca` itself) as a port's files.
fn files_in(dir: &Path, prefix: &str, ca: &Ca, cn: &str) -> TlsFiles {
    let (cert, key) = ca.issue(cn);
    let files = TlsFiles {
        cert_file: dir.join(format!("{prefix}.crt")),
        key_file: dir.join(format!("{prefix}.key")),
        trusted_ca_file: Some(dir.join(format!("{prefix}-ca.crt"))),
        client_cert_auth: true,
        self_signed: false,
    };
    std::fs::write(&files.cert_file, cert).unwrap();
    std::fs::write(&files.key_file, key).unwrap();
    std::fs::write(files.trusted_ca_file.as_ref().unwrap(), ca.cert.pem()).unwrap();
    files
}

/// Handshakes `client` with `server`; the server's stream comes back on
/// success so the caller can look at what was negotiated.
async fn handshake(
    server: &ServerTls,
    client: Arc<rustls::ClientConfig>,
) -> io::Result<(
    tokio_rustls::server::TlsStream<tokio::io::DuplexStream>,
    tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
)> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    let (s, c) = tokio::join!(server.accept(a), connector.connect(name, b));
    let (mut s, mut c) = (s?, c?);
    // TLS 1.3 reports a rejected client certificate only on first use.
    c.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await?;
    Ok((s, c))
}

/// A client that trusts `ca` and presents no certificate.
fn anonymous_client(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[tokio::test]
async fn mutual_tls_succeeds_and_the_server_sees_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let server = ServerTls::server(
        files_in(dir.path(), "server", &ca, "n1"),
        Default::default(),
    )
    .unwrap();
    let client = ClientTls::client(
        files_in(dir.path(), "client", &ca, "alice"),
        Default::default(),
    )
    .unwrap();
    let (s, _c) = handshake(&server, client.current()).await.unwrap();
    let seen = s.get_ref().1.peer_certificates().unwrap();
    let want = std::fs::read_to_string(dir.path().join("client.crt")).unwrap();
    use pki_types::pem::PemObject;
    assert_eq!(
        seen[0],
        pki_types::CertificateDer::from_pem_slice(want.as_bytes()).unwrap()
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn a_client_without_a_certificate_or_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let server = ServerTls::server(
        files_in(dir.path(), "server", &ca, "n1"),
        Default::default(),
    )
    .unwrap();
    let err = handshake(&server, anonymous_client(&ca)).await.err();
    assert!(err.is_some(), "a client without a certificate got through");

    // Signed by another CA, though it trusts the server's.
    let other = Ca::new("other");
    let mut files = files_in(dir.path(), "stranger", &other, "mallory");
    std::fs::write(files.trusted_ca_file.as_ref().unwrap(), ca.cert.pem()).unwrap();
    files.client_cert_auth = true;
    let stranger = ClientTls::client(files, Default::default()).unwrap();
    assert!(handshake(&server, stranger.current()).await.is_err());

    // Without a CA and without --client-cert-auth, anyone may connect.
    let mut open = files_in(dir.path(), "open", &ca, "n1");
    open.trusted_ca_file = None;
    open.client_cert_auth = false;
    let server = ServerTls::server(open.clone(), Default::default()).unwrap();
    handshake(&server, anonymous_client(&ca)).await.unwrap();
    open.client_cert_auth = true;
    let err = ServerTls::server(open, Default::default()).err().unwrap();
    assert!(err.0.contains("--trusted-ca-file"), "{err}");
}

#[tokio::test]
async fn changed_files_are_used_for_new_handshakes_and_open_sessions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let files = files_in(dir.path(), "server", &ca, "n1");
    let server = ServerTls::server(files.clone(), Default::default()).unwrap();
    let client = ClientTls::client(
        files_in(dir.path(), "client", &ca, "alice"),
        Default::default(),
    )
    .unwrap();
    let (mut old_s, mut old_c) = handshake(&server, client.current()).await.unwrap();

    // A new CA and a server certificate from it; the client trusts both.
    let ca2 = Ca::new("ca2");
    let (cert, key) = ca2.issue("n1-renewed");
    std::fs::write(&files.cert_file, &cert).unwrap();
    std::fs::write(&files.key_file, key).unwrap();
    let (client_cert, client_key) = ca2.issue("bob");
    let bob = dir.path().join("bob");
    std::fs::create_dir(&bob).unwrap();
    let bob_files = TlsFiles {
        cert_file: bob.join("c.crt"),
        key_file: bob.join("c.key"),
        trusted_ca_file: Some(bob.join("ca.crt")),
        client_cert_auth: true,
        self_signed: false,
    };
    std::fs::write(&bob_files.cert_file, client_cert).unwrap();
    std::fs::write(&bob_files.key_file, client_key).unwrap();
    std::fs::write(
        bob_files.trusted_ca_file.as_ref().unwrap(),
        format!("{}{}", ca.cert.pem(), ca2.cert.pem()),
    )
    .unwrap();
    let bob_client = ClientTls::client(bob_files, Default::default()).unwrap();
    // Bob's certificate is from ca2, which the server does not trust yet.
    assert!(handshake(&server, bob_client.current()).await.is_err());
    std::fs::write(files.trusted_ca_file.as_ref().unwrap(), ca2.cert.pem()).unwrap();
    tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(100)).await;

    let (s, c) = handshake(&server, bob_client.current()).await.unwrap();
    use pki_types::pem::PemObject;
    let renewed = pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(c.get_ref().1.peer_certificates().unwrap()[0], renewed);
    drop((s, c));
    // The session opened before the reload still carries data both ways.
    old_c.write_all(b"more").await.unwrap();
    let mut buf = [0u8; 4];
    old_s.read_exact(&mut buf).await.unwrap();
    old_s.write_all(b"back").await.unwrap();
    old_c.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"back");

    // A broken file keeps the last good configuration.
    std::fs::write(&files.cert_file, "not a certificate").unwrap();
    tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(100)).await;
    let (_s, c) = handshake(&server, bob_client.current()).await.unwrap();
    assert_eq!(c.get_ref().1.peer_certificates().unwrap()[0], renewed);
}

#[tokio::test]
async fn tls_versions_and_cipher_suites_restrict_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let only13 = TlsSettings {
        min_version: Some(TlsVersion::V13),
        ..Default::default()
    };
    let only12 = TlsSettings {
        max_version: Some(TlsVersion::V12),
        ..Default::default()
    };
    let server = ServerTls::server(files_in(dir.path(), "server", &ca, "n1"), only13).unwrap();
    let files = files_in(dir.path(), "client", &ca, "alice");
    let client12 = ClientTls::client(files.clone(), only12.clone()).unwrap();
    assert!(handshake(&server, client12.current()).await.is_err());
    let client = ClientTls::client(files.clone(), Default::default()).unwrap();
    let (s, _c) = handshake(&server, client.current()).await.unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    let chacha = TlsSettings {
        cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into()],
        max_version: Some(TlsVersion::V12),
        ..Default::default()
    };
    let server = ServerTls::server(files_in(dir.path(), "server", &ca, "n1"), chacha).unwrap();
    let (s, _c) = handshake(&server, client12.current()).await.unwrap();
    assert_eq!(
        s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
}

#[test]
fn bad_tls_settings_are_refused_with_etcds_messages() {
    let cases = [
        (
            TlsSettings {
                min_version: Some(TlsVersion::V13),
                max_version: Some(TlsVersion::V12),
                ..Default::default()
            },
            "min version (TLS1.3) is greater than max version (TLS1.2)",
        ),
        (
            TlsSettings {
                min_version: Some(TlsVersion::V13),
                cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
                ..Default::default()
            },
            "cipher suites cannot be configured when only TLS1.3 is enabled",
        ),
        (
            TlsSettings {
                cipher_suites: vec!["TLS_FOO".into()],
                ..Default::default()
            },
            "unexpected TLS cipher suite \"TLS_FOO\"",
        ),
        (
            TlsSettings {
                cipher_suites: vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()],
                ..Default::default()
            },
            "TLS cipher suite \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported by cairn",
        ),
    ];
    for (settings, want) in cases {
        let err = settings.validate().unwrap_err();
        assert!(err.0.starts_with(want), "{settings:?}: {err}");
    }
    assert_eq!(
        parse_tls_version("TLS1.1").unwrap_err().0,
        "unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)"
    );
    assert_eq!(parse_tls_version("").unwrap(), None);
    let ok = TlsSettings {
        cipher_suites: vec![
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".into(),
        ],
        ..Default::default()
    };
    ok.validate().unwrap();
}
