//! TLS configuration: rustls with aws-lc-rs, the workspace's one crypto library.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::reload::Reload;
use crate::{ServerError, TlsFiles};

/// Keeps `serving` current with `files`: a new certificate and key once a reload is asked for
/// or the files change (see [`crate::reload`]). A pair that does not load, or whose key does not
/// match its certificate, is refused and the one in use stays. Connections already open keep
/// the certificate they were made with.
pub(crate) async fn keep_current(
    serving: axum_server::tls_rustls::RustlsConfig,
    files: TlsFiles,
    reload: Reload,
) {
    let paths = vec![files.cert.clone(), files.key.clone()];
    reload
        .watch("TLS certificate", paths, move || {
            crate::reload::regular_file(&files.cert)?;
            crate::reload::regular_file(&files.key)?;
            let config = server_config(&files).map_err(|e| e.to_string())?;
            serving.reload_from_config(Arc::new(config));
            Ok(())
        })
        .await;
}

pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, ServerError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServerError::Config(format!("TLS key {}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ServerError::Config(format!(
                "TLS certificate and key {}: {e}",
                files.cert.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Config(format!("TLS certificate {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Config(format!(
            "TLS certificate {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}
