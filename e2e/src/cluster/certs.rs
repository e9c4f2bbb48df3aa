//! The local cluster's PKI: one CA, the API server's serving certificate, client
//! certificates for each control-plane identity, and the service-account signing key.
//!
//! Keys are ECDSA P-256 (PKCS#8 PEM), which every Kubernetes component accepts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::ClusterError;

/// A client identity: a certificate and key signed by the cluster CA.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
}

/// Every file of the cluster's PKI, written under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (PEM); clients trust it, the API server checks client certs against it.
    pub ca_cert: PathBuf,
    /// The CA key, used by kube-controller-manager to sign CSRs.
    pub ca_key: PathBuf,
    /// The API server's serving certificate and key.
    pub serving: ClientCert,
    /// The cluster administrator (`system:masters`).
    pub admin: ClientCert,
    /// kube-controller-manager's identity (`system:kube-controller-manager`).
    pub controller_manager: ClientCert,
    /// kube-scheduler's identity (`system:kube-scheduler`).
    pub scheduler: ClientCert,
    /// The service-account token signing key (private, PKCS#8 PEM).
    pub sa_key: PathBuf,
    /// The service-account token verification key (public, SPKI PEM).
    pub sa_pub: PathBuf,
}

fn pki_err(what: &str) -> impl FnOnce(rcgen::Error) -> ClusterError + '_ {
    move |source| ClusterError::Pki {
        what: what.to_owned(),
        source,
    }
}

fn write(path: &Path, contents: &str) -> Result<(), ClusterError> {
    std::fs::write(path, contents).map_err(|source| ClusterError::Io {
        action: format!("write {}", path.display()),
        source,
    })
}

impl Pki {
    /// Generates a fresh PKI in `dir`. The serving certificate is valid for
    /// `serving_ips` (the addresses clients and pods dial) plus the usual in-cluster names.
    pub fn generate(dir: &Path, serving_ips: &[IpAddr]) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Io {
            action: format!("create {}", dir.display()),
            source,
        })?;

        let ca_key = KeyPair::generate().map_err(pki_err("CA key"))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err("CA"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "locus-local-cluster-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(pki_err("CA"))?;
        let ca_pem_key = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        write(&ca_cert_path, &ca_cert.pem())?;
        write(&ca_key_path, &ca_pem_key)?;

        let mut sans: Vec<String> = serving_ips.iter().map(ToString::to_string).collect();
        sans.extend(
            [
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from),
        );
        let serving = leaf(
            dir,
            "apiserver",
            "kube-apiserver",
            None,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        )?;
        let client = |name: &str, cn: &str, org: Option<&str>| {
            leaf(
                dir,
                name,
                cn,
                org,
                Vec::new(),
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            )
        };
        let admin = client("admin", "locus-admin", Some("system:masters"))?;
        let controller_manager =
            client("controller-manager", "system:kube-controller-manager", None)?;
        let scheduler = client("scheduler", "system:kube-scheduler", None)?;

        let sa = KeyPair::generate().map_err(pki_err("service-account key"))?;
        let sa_key = dir.join("sa.key");
        let sa_pub = dir.join("sa.pub");
        write(&sa_key, &sa.serialize_pem())?;
        write(&sa_pub, &sa.public_key_pem())?;

        Ok(Self {
            ca_cert: ca_cert_path,
            ca_key: ca_key_path,
            serving,
            admin,
            controller_manager,
            scheduler,
            sa_key,
            sa_pub,
        })
    }
}

fn leaf(
    dir: &Path,
    file_stem: &str,
    common_name: &str,
    organization: Option<&str>,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<ClientCert, ClusterError> {
    let key = KeyPair::generate().map_err(pki_err(file_stem))?;
    let mut params = CertificateParams::new(sans).map_err(pki_err(file_stem))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).map_err(pki_err(file_stem))?;
    let out = ClientCert {
        cert: dir.join(format!("{file_stem}.crt")),
        key: dir.join(format!("{file_stem}.key")),
    };
    write(&out.cert, &cert.pem())?;
    write(&out.key, &key.serialize_pem())?;
    Ok(out)
}
