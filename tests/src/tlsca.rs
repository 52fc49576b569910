//! A test CA made by the test: a CA certificate, a server certificate for `localhost`
//! and `127.0.0.1`, and a client certificate, all signed by it, written as PEM files
//! into a directory of the test's. Receivers (an HTTPS server, rsyslog's TLS listener)
//! present the server certificate; the oracle trusts the CA through `ca_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// The PEM files of a test CA.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (`localhost`, `127.0.0.1`, `::1`).
    pub server_cert: PathBuf,
    /// Its private key.
    pub server_key: PathBuf,
    /// A client certificate (CN `exim-access test client`).
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// A second CA's certificate, which signed nothing here: trusting it instead of
    /// [`TestCa::ca`] must make the TLS handshake fail.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, key)
}

impl TestCa {
    /// Makes the CA and its certificates in `dir` (created if missing).
    pub fn create(dir: &Path) -> TestCa {
        std::fs::create_dir_all(dir).expect("CA directory");
        let (ca_cert, ca_key) = ca("exim-access test CA");
        let (other, _) = ca("exim-access unrelated CA");
        let leaf = |names: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("leaf key");
            let cert = params
                .signed_by(&key, &ca_cert, &ca_key)
                .expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            "localhost",
        );
        let (client_pem, client_key) = leaf(
            vec!["exim-access-test-client".into()],
            "exim-access test client",
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestCa {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other.pem()),
        }
    }

    /// A rustls server config presenting the server certificate; with
    /// `require_client`, clients must present a certificate the CA signed.
    pub fn server_config(&self, require_client: bool) -> Arc<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("server.pem");
        let key = PrivateKeyDer::from_pem_file(&self.server_key).expect("server.key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).expect("ca.pem") {
                roots.add(c.expect("ca.pem")).expect("CA certificate");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(
            builder
                .with_single_cert(certs, key)
                .expect("server certificate and key"),
        )
    }
}
