//! TLS for the client and peer ports: etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth` (and their `--peer-*` twins),
//! `--cipher-suites`, `--tls-min-version` and `--tls-max-version`, over
//! rustls.
//!
//! # What it owns
//!
//! [`TlsFiles`] names one port's certificate, key and CA; [`TlsSettings`]
//! the protocol versions and TLS 1.2 cipher suites both ports share (etcd
//! applies `--cipher-suites` and the version flags to both). From them a
//! [`Reloading`] builds rustls configurations and keeps them current:
//!
//! - **Reload without restart.** Before a handshake, at most once every
//!   [`RELOAD_CHECK`], it compares each file's modification time and length
//!   with what it last loaded; if one changed it builds a new configuration
//!   and uses it for every later handshake. Connections already open keep the
//!   session they negotiated: nothing is dropped, and a revoked client stays
//!   connected until it reconnects. The CA is reloaded the same way (etcd
//!   reloads only the certificate, per handshake, and never the CA:
//!   etcd#11555).
//! - **A bad file never takes the port down.** A reload that fails (a
//!   half-written file, a key that does not match) is logged and the last
//!   good configuration stays; the files are tried again at the next check.
//!   At start, a bad file is an error: the member does not start.
//!
//! # Rules, as etcd's
//!
//! - With a trusted CA, or `--client-cert-auth`, a client must present a
//!   certificate that CA signed; the handshake fails otherwise (etcd's
//!   `RequireAndVerifyClientCert` whenever `TrustedCAFile != ""`).
//! - TLS 1.2 is the lowest version offered unless `--tls-min-version` says
//!   1.3; `--cipher-suites` (Go's names) restricts the TLS 1.2 suites, and
//!   TLS 1.3's suites are always on (Go cannot configure them either).
//! - ALPN offers `h2` and `http/1.1`: gRPC and the HTTP side of the client
//!   port share the listener behind TLS as without it.
// Driver code: it reads certificate files and the clock (for the reload
// check), which the crate's clippy.toml keeps out of the sans-IO core.
#![allow(clippy::disallowed_methods)]

use super::config::{version_name, ConfigError, TlsFiles, TlsSettings, TlsVersion};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, crypto::CryptoProvider, pki_types};

/// How often the files are looked at for a change, at most.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take before the connection is dropped, so a
/// client that connects and sends nothing holds nothing for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Go's names for the TLS 1.2 cipher suites it knows that rustls does not
/// offer (CBC modes, RSA key exchange, RC4, 3DES): accepted by etcd, refused
/// here with a reason rather than as unknown.
const GO_ONLY_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The rustls suite for a Go cipher suite name (Go also takes the ChaCha20
/// suites without their `_SHA256`).
fn suite_by_go_name(
    provider: &CryptoProvider,
    name: &str,
) -> Result<rustls::SupportedCipherSuite, ConfigError> {
    let full = match name {
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            format!("{name}_SHA256")
        }
        _ => name.to_string(),
    };
    let found = provider
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .find(|s| s.suite().as_str() == Some(full.as_str()));
    match found {
        Some(s) => Ok(*s),
        None if GO_ONLY_SUITES.contains(&name) => Err(ConfigError(format!(
            "TLS cipher suite {name:?} is not supported by cairn (rustls offers only ECDHE key exchange with AES-GCM or \
             ChaCha20-Poly1305)"
        ))),
        None => Err(ConfigError(format!("unexpected TLS cipher suite {name:?}"))),
    }
}

impl TlsSettings {
    /// etcd's checks, with its messages, plus cairn's for suites rustls
    /// lacks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.provider().map(|_| ())
    }

    /// The ring provider cut down to the configured TLS 1.2 suites (TLS 1.3's
    /// are kept whole).
    fn provider(&self) -> Result<CryptoProvider, ConfigError> {
        let (min, max) = (self.min_version, self.max_version);
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                return Err(ConfigError(format!(
                    "min version ({}) is greater than max version ({})",
                    version_name(min),
                    version_name(max)
                )));
            }
        }
        if min == Some(TlsVersion::V13) && !self.cipher_suites.is_empty() {
            return Err(ConfigError(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let mut chosen: Vec<_> = provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .copied()
                .collect();
            for name in &self.cipher_suites {
                chosen.push(suite_by_go_name(&provider, name)?);
            }
            provider.cipher_suites = chosen;
        }
        Ok(provider)
    }

    fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let min = self.min_version.unwrap_or(TlsVersion::V12);
        let max = self.max_version.unwrap_or(TlsVersion::V13);
        let mut versions = Vec::new();
        if min <= TlsVersion::V12 && TlsVersion::V12 <= max {
            versions.push(&rustls::version::TLS12);
        }
        if TlsVersion::V13 <= max {
            versions.push(&rustls::version::TLS13);
        }
        versions
    }
}

/// A certificate, key or CA file that could not be used.
fn file_error(what: &str, path: &Path, err: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{what} {}: {err}", path.display()))
}

fn load_certs(path: &Path) -> Result<Vec<pki_types::CertificateDer<'static>>, ConfigError> {
    use pki_types::pem::PemObject;
    let certs = pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("cannot read certificates from", path, e))?;
    if certs.is_empty() {
        return Err(file_error("no certificate in", path, "empty"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<pki_types::PrivateKeyDer<'static>, ConfigError> {
    use pki_types::pem::PemObject;
    pki_types::PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_error("cannot read a private key from", path, e))
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error("bad CA certificate in", path, e))?;
    }
    Ok(roots)
}

/// `map_err` for a key that does not belong to the certificate at `cert`.
fn key_mismatch(cert: &Path) -> impl FnOnce(rustls::Error) -> ConfigError + '_ {
    move |e| file_error("the key does not fit the certificate in", cert, e)
}

/// A client configuration builder with `settings`' provider and versions,
/// and the provider (for verifiers built from it).
fn client_builder(
    settings: &TlsSettings,
) -> Result<
    (
        Arc<CryptoProvider>,
        rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
    ),
    ConfigError,
> {
    let provider = Arc::new(settings.provider()?);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&settings.versions())
        .map_err(|e| ConfigError(format!("TLS versions: {e}")))?;
    Ok((provider, builder))
}

/// A server configuration for `files`, read from disk now.
pub fn server_config(
    files: &TlsFiles,
    settings: &TlsSettings,
) -> Result<rustls::ServerConfig, ConfigError> {
    let provider = Arc::new(settings.provider()?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&settings.versions())
        .map_err(|e| ConfigError(format!("TLS versions: {e}")))?;
    let builder =
        match (&files.trusted_ca_file, files.client_cert_auth) {
            (Some(ca), _) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(ca)?),
                    provider,
                )
                .build()
                .map_err(|e| file_error("cannot verify clients with", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            (None, true) => return Err(ConfigError(
                "--client-cert-auth needs --trusted-ca-file to check client certificates against"
                    .into(),
            )),
            (None, false) => builder.with_no_client_auth(),
        };
    let mut config = builder
        .with_single_cert(load_certs(&files.cert_file)?, load_key(&files.key_file)?)
        .map_err(key_mismatch(&files.cert_file))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration for a member dialing its peers: it presents
/// `files`' certificate and checks the peer's against `files`' CA (or,
/// for `--peer-auto-tls`'s self-signed files, not at all, as etcd).
pub fn client_config(
    files: &TlsFiles,
    settings: &TlsSettings,
) -> Result<rustls::ClientConfig, ConfigError> {
    let (provider, builder) = client_builder(settings)?;
    let builder = match &files.trusted_ca_file {
        Some(ca) => builder.with_root_certificates(load_roots(ca)?),
        None if files.self_signed => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider))),
        None => {
            return Err(ConfigError(
                "an https:// peer URL needs --peer-trusted-ca-file to check peers against".into(),
            ))
        }
    };
    let mut config = builder
        .with_client_auth_cert(load_certs(&files.cert_file)?, load_key(&files.key_file)?)
        .map_err(key_mismatch(&files.cert_file))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// `--peer-auto-tls`'s verifier: accepts any certificate (there is no CA to
/// check a self-signed one against), but still checks that the peer holds
/// the certificate's key. Encryption without authentication, as etcd's
/// self-signed mode: for tests, not for production.
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &pki_types::CertificateDer<'_>,
        _intermediates: &[pki_types::CertificateDer<'_>],
        _server_name: &pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// etcd's `--auto-tls` / `--peer-auto-tls`: the certificate and key in
/// `dir` (`cert.pem`, `key.pem`), generated on first use, self-signed, valid
/// for `hosts` (the listen URLs' hosts) for `validity_years` years, and
/// reused on later starts as etcd reuses them. The key file is 0600.
pub fn self_signed(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<TlsFiles, ConfigError> {
    let files = TlsFiles {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
        trusted_ca_file: None,
        client_cert_auth: false,
        self_signed: true,
    };
    if files.cert_file.exists() && files.key_file.exists() {
        return Ok(files);
    }
    if validity_years == 0 {
        return Err(ConfigError(
            "selfSignedCertValidity is invalid,it should be greater than 0".into(),
        ));
    }
    let err = |e: &dyn std::fmt::Display| {
        ConfigError(format!(
            "cannot generate a certificate in {}: {e}",
            dir.display()
        ))
    };
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| err(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cairn");
    params.not_before = time::OffsetDateTime::now_utc();
    let not_after = params.not_before + time::Duration::days(365 * i64::from(validity_years));
    params.not_after = not_after;
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
    let cert = params.self_signed(&key).map_err(|e| err(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let mut key_out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&files.key_file)
            .map_err(|e| err(&e))?
    };
    io::Write::write_all(&mut key_out, key.serialize_pem().as_bytes()).map_err(|e| err(&e))?;
    std::fs::write(&files.cert_file, cert.pem()).map_err(|e| err(&e))?;
    tracing::warn!(
        cert_file = %files.cert_file.display(),
        %not_after,
        "generated a self-signed certificate (--auto-tls/--peer-auto-tls: encryption without authentication, for tests)"
    );
    Ok(files)
}

/// A client configuration for a client of the client port (`cairn
/// verify`'s etcdctl-style `--cacert`, `--cert`, `--key`): it checks the
/// server's certificate against `ca` and presents `cert_key`'s certificate
/// only if one is given (a server without `--client-cert-auth` needs none).
/// Read once: a client run is short, nothing is reloaded.
pub fn client_config_for(
    ca: &Path,
    cert_key: Option<(&Path, &Path)>,
    settings: &TlsSettings,
) -> Result<rustls::ClientConfig, ConfigError> {
    let builder = client_builder(settings)?
        .1
        .with_root_certificates(load_roots(ca)?);
    let mut config = match cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(key_mismatch(cert))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What identifies a file's content cheaply: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct State<C> {
    config: Arc<C>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

/// A configuration built from files and rebuilt when they change (see the
/// module docs). `C` is a rustls server or client configuration.
pub struct Reloading<C> {
    files: TlsFiles,
    settings: TlsSettings,
    build: fn(&TlsFiles, &TlsSettings) -> Result<C, ConfigError>,
    state: Mutex<State<C>>,
}

impl<C> Reloading<C> {
    /// Builds the first configuration; an unusable file is an error.
    pub fn new(
        files: TlsFiles,
        settings: TlsSettings,
        build: fn(&TlsFiles, &TlsSettings) -> Result<C, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let stamps = Self::stamps_of(&files);
        let config = Arc::new(build(&files, &settings)?);
        Ok(Self {
            files,
            settings,
            build,
            state: Mutex::new(State {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn stamps_of(files: &TlsFiles) -> Vec<Stamp> {
        let mut paths = vec![&files.cert_file, &files.key_file];
        paths.extend(&files.trusted_ca_file);
        paths.into_iter().map(|p| stamp(p)).collect()
    }

    /// The configuration to use now, rebuilt first if a file changed since
    /// it was built (looked at no more than every [`RELOAD_CHECK`]).
    pub fn current(&self) -> Arc<C> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamps = Self::stamps_of(&self.files);
            if stamps != state.stamps {
                match (self.build)(&self.files, &self.settings) {
                    Ok(config) => {
                        tracing::info!(cert_file = %self.files.cert_file.display(), "reloaded TLS certificates");
                        state.config = Arc::new(config);
                        state.stamps = stamps;
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS files changed but cannot be used; keeping the previous certificates"
                    ),
                }
            }
        }
        state.config.clone()
    }
}

/// The acceptor of one TLS port.
pub type ServerTls = Reloading<rustls::ServerConfig>;
/// The connector a member dials its peers with.
pub type ClientTls = Reloading<rustls::ClientConfig>;

impl ServerTls {
    /// A reloading server configuration for `files`.
    pub fn server(files: TlsFiles, settings: TlsSettings) -> Result<Self, ConfigError> {
        Reloading::new(files, settings, server_config)
    }

    /// Runs the server side of a handshake on `io`, bounded by
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<IO>(&self, io: IO) -> io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
            Ok(res) => res,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

impl ClientTls {
    /// A reloading client configuration for `files`.
    pub fn client(files: TlsFiles, settings: TlsSettings) -> Result<Self, ConfigError> {
        Reloading::new(files, settings, client_config)
    }

    /// Runs the client side of a handshake with `host` (a name or an IP
    /// address, checked against the peer's certificate) on `io`.
    pub async fn connect<IO>(
        &self,
        host: &str,
        io: IO,
    ) -> io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(self.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, io)).await {
            Ok(res) => res,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }
}

/// A server-side TLS connection, as tonic serves it (tonic implements its
/// `Connected` for rustls streams only with its own TLS features, which
/// would bring a second TLS set-up).
pub struct TlsConn(pub tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts on `listener` and runs each handshake on a task of its own, so a
/// slow client holds up nobody; yields the connections whose handshake
/// succeeded. A failed one is logged as etcd logs it ("rejected
/// connection"). Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> impl futures::Stream<Item = Result<TlsConn, std::convert::Infallible>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tls.accept(tcp).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(TlsConn(conn))).await;
                    }
                    Err(e) => {
                        tracing::warn!(remote_addr = %remote, error = %e, "rejected connection")
                    }
                }
            });
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
