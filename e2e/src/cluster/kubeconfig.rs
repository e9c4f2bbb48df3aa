//! Kubeconfig files for the local cluster's identities, with certificates embedded so a
//! file can be copied anywhere on the machine and still work.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ClusterError;
use super::certs::ClientCert;

fn read_b64(path: &Path) -> Result<String, ClusterError> {
    let bytes = std::fs::read(path).map_err(|source| ClusterError::Io {
        action: format!("read {}", path.display()),
        source,
    })?;
    Ok(STANDARD.encode(bytes))
}

/// Writes a kubeconfig for `user` at `path`, pointing at `server` and trusting `ca_cert`.
pub fn write(
    path: &Path,
    server: &str,
    ca_cert: &Path,
    user: &str,
    identity: &ClientCert,
) -> Result<(), ClusterError> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: locus-local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: locus-local
  context:
    cluster: locus-local
    user: {user}
    namespace: default
current-context: locus-local
",
        ca = read_b64(ca_cert)?,
        cert = read_b64(&identity.cert)?,
        key = read_b64(&identity.key)?,
    );
    std::fs::write(path, text).map_err(|source| ClusterError::Io {
        action: format!("write {}", path.display()),
        source,
    })
}
