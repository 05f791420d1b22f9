//! Connections for `cairn verify`: plain, or TLS with etcdctl's `--cacert`,
//! `--cert` and `--key`.
//!
//! tonic's own TLS is not built outside tests, so a TLS connection is ours:
//! TCP, then a rustls handshake (the configuration from
//! `cairn::server::tls::client_config_for`), handed to tonic through
//! `Endpoint::connect_with_connector` as a plain stream, as a member dials
//! its peers (src/server/peer.rs). With TLS configured, an endpoint without
//! a scheme is dialed over TLS (as etcdctl does); `http://` stays plain; an
//! `https://` endpoint without `--cacert` is an error.

use cairn::server::config::TlsSettings;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::{pki_types::ServerName, ClientConfig};
use tonic::transport::{Channel, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS flags (etcdctl's names).
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Verify the servers' certificates with this CA bundle (PEM); with it,
    /// endpoints without a scheme are dialed over TLS.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Present this client certificate (PEM; needs --key and --cacert).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

/// How `cairn verify` dials its endpoints.
#[derive(Clone, Default)]
pub(crate) struct Dialer {
    tls: Option<Arc<ClientConfig>>,
}

impl Dialer {
    pub fn new(args: &TlsArgs) -> Result<Dialer, String> {
        let Some(ca) = &args.cacert else {
            if args.cert.is_some() {
                return Err("--cert needs --cacert to check the servers' certificates".into());
            }
            return Ok(Dialer::default());
        };
        let cert_key = args.cert.as_deref().zip(args.key.as_deref());
        let config = cairn::server::tls::client_config_for(ca, cert_key, &TlsSettings::default())
            .map_err(|e| e.to_string())?;
        Ok(Dialer {
            tls: Some(Arc::new(config)),
        })
    }

    /// One connection to `ep` (host:port or a URL).
    pub async fn dial(&self, ep: &str) -> Result<Channel, String> {
        let tls = match (&self.tls, ep.split_once("://")) {
            (_, Some(("http", _))) | (None, None) => None,
            (Some(tls), None) | (Some(tls), Some(("https", _))) => Some(tls.clone()),
            (None, Some(("https", _))) => {
                return Err(format!("{ep}: an https:// endpoint needs --cacert"));
            }
            (_, Some((scheme, _))) => return Err(format!("{ep}: unknown scheme {scheme:?}")),
        };
        let Some(tls) = tls else {
            return crate::bench::dial(ep).await;
        };
        let authority = ep.split_once("://").map_or(ep, |(_, rest)| rest);
        let authority = authority.trim_end_matches('/');
        let uri: http::Uri = format!("https://{authority}")
            .parse()
            .map_err(|e| format!("{ep}: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("{ep}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(2379);
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{ep}: {e}"))?;
        let connector = tower::service_fn(move |_: http::Uri| {
            let (tls, host, name) = (tls.clone(), host.clone(), name.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let connect = tokio_rustls::TlsConnector::from(tls).connect(name, tcp);
                let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(conn))
            }
        });
        Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("{ep}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connector)
            .await
            .map_err(|e| format!("{ep}: {e}"))
    }
}
