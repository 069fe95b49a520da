//! The controller's rustls server configuration: its certificate chain, and client certificates from its own CA
//! verified when presented. A client without a certificate may connect, but only `Enroll` accepts it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::error::{Error, Result};

pub fn server_config(ca_cert: &Path, chain: &Path, key: &Path) -> Result<ServerConfig> {
    let pem_err = |p: &Path, e: &dyn std::fmt::Display| Error::Pki(format!("{}: {e}", p.display()));
    let ca = CertificateDer::from_pem_file(ca_cert).map_err(|e| pem_err(ca_cert, &e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .map_err(|e| pem_err(chain, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(chain, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, &e))?;

    let provider = rollcall_proto::tls::provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Pki(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
