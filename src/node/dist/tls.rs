//! The distribution over TLS, as OTP's `inet_tls_dist` runs it
//! (`-proto_dist inet_tls`): this module owns what the TLS options mean
//! ([`TlsDistOptions`], read by [`crate::config::tls_dist`] from
//! `-ssl_dist_optfile` or `-ssl_dist_opt`), loading the certificates and
//! keys they name into rustls configurations ([`DistTls::load`]), and the
//! certificate checks OTP 25 makes.
//!
//! What OTP 25 does, and so what this does: the connection is TLS from its
//! first byte (EPMD stays plain TCP); the distribution handshake then runs
//! inside it with 4-byte length prefixes instead of 2 (the TLS socket is
//! opened with `{packet, 4}`), and the framing after it is unchanged. The
//! TLS versions are `['tlsv1.2']` unless `versions` says otherwise. By
//! default neither side verifies anything (`verify_none`). A client with
//! `verify_peer` checks the server's chain against its `cacertfile` and the
//! server's name against the host part of the node name it connects to (OTP
//! passes it as `server_name_indication`), or against the name given as
//! `server_name_indication`, or not at all with `{server_name_indication,
//! disable}`. A server with `verify_peer` asks for a client certificate and
//! checks its chain, but no name (OTP checks names only with its own
//! `verify_fun`), and accepts a client without a certificate unless
//! `fail_if_no_peer_cert` is true.
//!
//! Name checks are rustls's: the certificate's subjectAltName DNS names
//! (wildcards allowed) or IP addresses. OTP's `public_key` differs at the
//! edges: it accepts a Common Name when the certificate has no
//! subjectAltName at all, and refuses wildcards unless told otherwise.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// `verify`: whether the peer's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// `verify_none` (OTP 25's default): any certificate is accepted.
    #[default]
    None,
    /// `verify_peer`: the chain must lead to a `cacertfile` certificate.
    Peer,
}

/// `server_name_indication` of the client side: the name sent in the TLS
/// hello and checked against the server's certificate under `verify_peer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerNameIndication {
    /// Not given: the host part of the node name connected to, as
    /// `inet_tls_dist` passes it.
    #[default]
    NodeHost,
    /// `disable`: no name sent and none checked (the chain still is).
    Disable,
    /// A host name given in the options: sent and checked instead.
    Name(String),
}

/// A TLS version of `versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// `'tlsv1.2'`.
    Tls12,
    /// `'tlsv1.3'`.
    Tls13,
}

/// OTP's default chain depth (`depth`): intermediate certificates allowed
/// between the peer's certificate and the trusted one.
pub const DEFAULT_DEPTH: usize = 10;

/// The options of one side (`server` or `client`) of the distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSideOptions {
    /// `certfile`: this node's certificate (and any intermediates), PEM.
    pub certfile: Option<PathBuf>,
    /// `keyfile`: its private key, PEM; the certfile when not given, as in
    /// OTP.
    pub keyfile: Option<PathBuf>,
    /// `cacertfile`: the certificates trusted to sign peers', PEM.
    pub cacertfile: Option<PathBuf>,
    /// `verify`.
    pub verify: Verify,
    /// `fail_if_no_peer_cert` (server only): refuse a client that sends no
    /// certificate under `verify_peer`.
    pub fail_if_no_peer_cert: bool,
    /// `server_name_indication` (client only).
    pub server_name_indication: ServerNameIndication,
    /// `versions`; `['tlsv1.2']` by default, as `inet_tls_dist` sets it.
    pub versions: Vec<TlsVersion>,
    /// `depth`: most intermediate certificates in a peer's chain.
    pub depth: usize,
}

impl Default for TlsSideOptions {
    fn default() -> Self {
        Self {
            certfile: None,
            keyfile: None,
            cacertfile: None,
            verify: Verify::None,
            fail_if_no_peer_cert: false,
            server_name_indication: ServerNameIndication::NodeHost,
            versions: vec![TlsVersion::Tls12],
            depth: DEFAULT_DEPTH,
        }
    }
}

/// Both sides' options: `[{server, [...]}, {client, [...]}]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsDistOptions {
    /// Used when a peer connects to this node.
    pub server: TlsSideOptions,
    /// Used when this node connects to a peer.
    pub client: TlsSideOptions,
}

/// Options that cannot be made into a working TLS setup: the node does not
/// start.
#[derive(Debug, thiserror::Error)]
#[error("TLS distribution ({side} options): {message}")]
pub struct TlsSetupError {
    /// `server` or `client`.
    pub side: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The loaded TLS setup of a node: how to accept a peer's connection and
/// how to open one to a peer.
#[derive(Clone)]
pub struct DistTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    server_name: ServerNameIndication,
}

impl std::fmt::Debug for DistTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The crypto of every TLS connection: rustls's `ring` provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl DistTls {
    /// Reads the certificates and keys `options` name and builds both sides.
    pub fn load(options: &TlsDistOptions) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&options.server, &provider)?));
        let connector = TlsConnector::from(Arc::new(client_config(&options.client, &provider)?));
        Ok(Self {
            acceptor,
            connector,
            server_name: options.client.server_name_indication.clone(),
        })
    }

    /// The server side of the TLS handshake on an accepted connection.
    pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>> {
        self.acceptor.accept(io).await
    }

    /// The client side of the TLS handshake toward the node on `host` (the
    /// host part of its name), reached at `ip`.
    pub async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
        host: &str,
        ip: IpAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>> {
        let name = match &self.server_name {
            // OTP strips a trailing dot from the name it sends.
            ServerNameIndication::NodeHost => server_name(host.trim_end_matches('.'))?,
            ServerNameIndication::Name(name) => server_name(name)?,
            // Nothing is sent (the config has SNI off) and nothing checked.
            ServerNameIndication::Disable => ServerName::IpAddress(ip.into()),
        };
        self.connector.connect(name, io).await
    }
}

fn server_name(name: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a host name a certificate can be checked against"),
        )
    })
}

fn setup_error(side: &'static str, message: impl Into<String>) -> TlsSetupError {
    TlsSetupError {
        side,
        message: message.into(),
    }
}

fn read_certs(
    side: &'static str,
    what: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| setup_error(side, format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(setup_error(
            side,
            format!("{what} {}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(side: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        setup_error(
            side,
            format!(
                "keyfile {}: no usable private key ({e}); an encrypted key needs `password`, which is not supported: decrypt it",
                path.display()
            ),
        )
    })
}

fn roots(
    side: &'static str,
    options: &TlsSideOptions,
) -> Result<Option<Arc<RootCertStore>>, TlsSetupError> {
    if options.verify == Verify::None {
        return Ok(None);
    }
    let Some(path) = &options.cacertfile else {
        return Err(setup_error(
            side,
            "verify_peer needs a cacertfile (OTP would refuse every peer: no CA to check against)",
        ));
    };
    let mut store = RootCertStore::empty();
    for cert in read_certs(side, "cacertfile", path)? {
        store
            .add(cert)
            .map_err(|e| setup_error(side, format!("cacertfile {}: {e}", path.display())))?;
    }
    Ok(Some(Arc::new(store)))
}

fn versions(options: &TlsSideOptions) -> Vec<&'static rustls::SupportedProtocolVersion> {
    options
        .versions
        .iter()
        .map(|version| match version {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect()
}

/// This node's certificate chain and key: both files, or neither.
fn identity(
    side: &'static str,
    options: &TlsSideOptions,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsSetupError> {
    match (&options.certfile, &options.keyfile) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(setup_error(side, "a keyfile without a certfile")),
        (Some(certfile), keyfile) => {
            let chain = read_certs(side, "certfile", certfile)?;
            let key = read_key(side, keyfile.as_deref().unwrap_or(certfile))?;
            Ok(Some((chain, key)))
        }
    }
}

fn server_config(
    options: &TlsSideOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    const SIDE: &str = "server";
    if options.fail_if_no_peer_cert && options.verify == Verify::None {
        return Err(setup_error(
            SIDE,
            "fail_if_no_peer_cert true needs verify_peer (OTP refuses the combination)",
        ));
    }
    let Some((chain, key)) = identity(SIDE, options)? else {
        return Err(setup_error(
            SIDE,
            "a certfile is needed: peers connecting to this node get its certificate",
        ));
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(options))
        .map_err(|e| setup_error(SIDE, e.to_string()))?;
    let builder = match roots(SIDE, options)? {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            if !options.fail_if_no_peer_cert {
                verifier = verifier.allow_unauthenticated();
            }
            let inner = verifier
                .build()
                .map_err(|e| setup_error(SIDE, e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(DepthLimitedClientVerifier {
                inner,
                depth: options.depth,
            }))
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| setup_error(SIDE, format!("certfile and keyfile: {e}")))
}

fn client_config(
    options: &TlsSideOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    const SIDE: &str = "client";
    if options.fail_if_no_peer_cert {
        return Err(setup_error(SIDE, "fail_if_no_peer_cert is a server option"));
    }
    let verifier = PeerCertVerifier {
        roots: roots(SIDE, options)?,
        check_name: options.server_name_indication != ServerNameIndication::Disable,
        depth: options.depth,
        provider: provider.clone(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(options))
        .map_err(|e| setup_error(SIDE, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity(SIDE, options)? {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| setup_error(SIDE, format!("certfile and keyfile: {e}")))?,
    };
    config.enable_sni = options.server_name_indication != ServerNameIndication::Disable;
    Ok(config)
}

/// Checks a server's certificate as OTP 25's client does: nothing under
/// `verify_none`; under `verify_peer` the chain, and the name unless
/// `server_name_indication` is `disable`.
#[derive(Debug)]
struct PeerCertVerifier {
    /// `None` for `verify_none`.
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    depth: usize,
    provider: Arc<CryptoProvider>,
}

fn too_deep(depth: usize, intermediates: usize) -> rustls::Error {
    rustls::Error::General(format!(
        "the peer's certificate chain has {intermediates} intermediate certificates, more than depth {depth}"
    ))
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        if intermediates.len() > self.depth {
            return Err(too_deep(self.depth, intermediates.len()));
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// rustls's client certificate check, with OTP's `depth` on top.
#[derive(Debug)]
struct DepthLimitedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    depth: usize,
}

impl ClientCertVerifier for DepthLimitedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if intermediates.len() > self.depth {
            return Err(too_deep(self.depth, intermediates.len()));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A CA that signs node certificates into a directory of PEM files.
    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        dir: PathBuf,
        cert: PathBuf,
    }

    fn scratch(stem: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flack-tls-unit-{stem}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    impl TestCa {
        fn new(name: &str) -> Self {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).expect("self-signed");
            let dir = scratch(name);
            let path = dir.join("ca.pem");
            std::fs::write(&path, cert.pem()).expect("write");
            Self {
                issuer: Issuer::new(params, key),
                dir,
                cert: path,
            }
        }

        /// A certificate for `names`, as (certfile, keyfile).
        fn node(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
            let key = KeyPair::generate().expect("key");
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, stem);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &self.issuer).expect("signed");
            let certfile = self.dir.join(format!("{stem}.pem"));
            let keyfile = self.dir.join(format!("{stem}.key"));
            std::fs::write(&certfile, cert.pem()).expect("write");
            std::fs::write(&keyfile, key.serialize_pem()).expect("write");
            (certfile, keyfile)
        }
    }

    impl Drop for TestCa {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn side(ca: &TestCa, files: (PathBuf, PathBuf), verify: Verify) -> TlsSideOptions {
        TlsSideOptions {
            certfile: Some(files.0),
            keyfile: Some(files.1),
            cacertfile: Some(ca.cert.clone()),
            verify,
            ..TlsSideOptions::default()
        }
    }

    /// A handshake between `client` (connecting to a node on `host`) and
    /// `server`, over loopback TCP, and a byte each way: `Ok` when both
    /// sides accepted, else the client's and the server's errors.
    async fn handshake(client: &DistTls, host: &str, server: &DistTls) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = server.clone();
        let accepting = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = server.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut byte = [0u8];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let connected = async {
            let mut tls = client
                .connect(tcp, host, addr.ip())
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut byte = [0u8];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
        .await;
        let accepted = accepting.await.expect("server task");
        match (connected, accepted) {
            (Ok(()), Ok(())) => Ok(()),
            (client, server) => Err(format!("client: {client:?}; server: {server:?}")),
        }
    }

    fn load(server: TlsSideOptions, client: TlsSideOptions) -> DistTls {
        DistTls::load(&TlsDistOptions { server, client }).expect("loads")
    }

    #[tokio::test]
    async fn verify_peer_checks_chain_and_the_node_host() {
        let ca = TestCa::new("ca1");
        let server = load(
            side(&ca, ca.node("s", &["localhost"]), Verify::Peer),
            TlsSideOptions::default(),
        );
        let client = load(
            side(&ca, ca.node("s2", &["localhost"]), Verify::Peer),
            side(&ca, ca.node("c", &["localhost"]), Verify::Peer),
        );
        handshake(&client, "localhost", &server)
            .await
            .expect("same CA, right host");
        let error = handshake(&client, "otherhost", &server)
            .await
            .expect_err("the certificate does not name otherhost");
        assert!(error.contains("not valid for name"), "{error}");

        // A name given as server_name_indication is checked instead; with
        // `disable` none is, the chain still is.
        let mut named = side(&ca, ca.node("c2", &["localhost"]), Verify::Peer);
        named.server_name_indication = ServerNameIndication::Name("localhost".into());
        handshake(
            &load(side(&ca, ca.node("s3", &["x"]), Verify::None), named),
            "otherhost",
            &server,
        )
        .await
        .expect("checked against the name given");
        let mut disabled = side(&ca, ca.node("c3", &["localhost"]), Verify::Peer);
        disabled.server_name_indication = ServerNameIndication::Disable;
        let disabled = load(side(&ca, ca.node("s4", &["x"]), Verify::None), disabled);
        handshake(&disabled, "otherhost", &server)
            .await
            .expect("no name check");
        let other_ca = TestCa::new("ca2");
        let stranger = load(
            side(&other_ca, other_ca.node("s5", &["localhost"]), Verify::None),
            TlsSideOptions::default(),
        );
        let error = handshake(&disabled, "localhost", &stranger)
            .await
            .expect_err("another CA's certificate");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }

    #[tokio::test]
    async fn verify_none_accepts_any_certificate() {
        let ca = TestCa::new("ca3");
        let other_ca = TestCa::new("ca4");
        let stranger = load(
            side(&other_ca, other_ca.node("s", &["elsewhere"]), Verify::None),
            TlsSideOptions::default(),
        );
        let client = load(
            side(&ca, ca.node("s2", &["localhost"]), Verify::None),
            TlsSideOptions::default(),
        );
        handshake(&client, "localhost", &stranger)
            .await
            .expect("OTP 25's default");
    }

    #[tokio::test]
    async fn a_server_with_verify_peer_asks_for_a_client_certificate() {
        let ca = TestCa::new("ca5");
        let other_ca = TestCa::new("ca6");
        let lenient = load(
            side(&ca, ca.node("s", &["localhost"]), Verify::Peer),
            TlsSideOptions::default(),
        );
        let mut strict_options = side(&ca, ca.node("s2", &["localhost"]), Verify::Peer);
        strict_options.fail_if_no_peer_cert = true;
        let strict = load(strict_options, TlsSideOptions::default());
        let anonymous = load(
            side(&ca, ca.node("s3", &["x"]), Verify::None),
            TlsSideOptions {
                cacertfile: Some(ca.cert.clone()),
                verify: Verify::Peer,
                ..TlsSideOptions::default()
            },
        );
        handshake(&anonymous, "localhost", &lenient)
            .await
            .expect("no certificate, fail_if_no_peer_cert false");
        let error = handshake(&anonymous, "localhost", &strict)
            .await
            .expect_err("fail_if_no_peer_cert true");
        assert!(error.contains("peer sent no certificates"), "{error}");
        let wrong = load(
            side(&ca, ca.node("s4", &["x"]), Verify::None),
            side(&other_ca, other_ca.node("c", &["localhost"]), Verify::None),
        );
        let error = handshake(&wrong, "localhost", &lenient)
            .await
            .expect_err("a client certificate of another CA");
        assert!(error.contains("UnknownIssuer"), "{error}");
        // The server checks no name: a client certificate for any host will do.
        let elsewhere = load(
            side(&ca, ca.node("s5", &["x"]), Verify::None),
            side(&ca, ca.node("c2", &["elsewhere.example"]), Verify::None),
        );
        handshake(&elsewhere, "localhost", &strict)
            .await
            .expect("no name check on clients");
    }

    #[test]
    fn options_that_cannot_work_are_refused_at_load() {
        let ca = TestCa::new("ca7");
        let message = |server: TlsSideOptions, client: TlsSideOptions| {
            DistTls::load(&TlsDistOptions { server, client })
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            message(TlsSideOptions::default(), TlsSideOptions::default()),
            "TLS distribution (server options): a certfile is needed: peers connecting to this node get its certificate"
        );
        let mut no_ca = side(&ca, ca.node("s", &["localhost"]), Verify::Peer);
        no_ca.cacertfile = None;
        assert!(
            message(no_ca, TlsSideOptions::default()).contains("verify_peer needs a cacertfile")
        );
        let mut odd = side(&ca, ca.node("s2", &["localhost"]), Verify::None);
        odd.fail_if_no_peer_cert = true;
        assert!(message(odd, TlsSideOptions::default()).contains("needs verify_peer"));
        let missing = TlsSideOptions {
            certfile: Some(ca.dir.join("missing.pem")),
            ..TlsSideOptions::default()
        };
        let text = message(missing, TlsSideOptions::default());
        assert!(
            text.contains("certfile") && text.contains("missing.pem"),
            "{text}"
        );
        // The key may be in the certfile, as OTP allows.
        let (certfile, keyfile) = ca.node("both", &["localhost"]);
        let both = ca.dir.join("both-in-one.pem");
        let text = std::fs::read_to_string(&certfile).expect("cert")
            + &std::fs::read_to_string(&keyfile).expect("key");
        std::fs::write(&both, text).expect("write");
        DistTls::load(&TlsDistOptions {
            server: TlsSideOptions {
                certfile: Some(both),
                ..TlsSideOptions::default()
            },
            client: TlsSideOptions::default(),
        })
        .expect("key read from the certfile");
    }
}
