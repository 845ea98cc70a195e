//! Certificates for a throw-away control plane: one CA signs the apiserver's serving certificate
//! and the client certificates (the admin user is in `system:masters`), plus a service-account
//! signing key. Everything is ECDSA P-256, generated with rcgen, written as PEM files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::Error;

/// Paths of the PEM files of one control plane.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (serving and client CA).
    pub ca_cert: PathBuf,
    /// The CA key (kube-controller-manager's cluster signing key).
    pub ca_key: PathBuf,
    /// The apiserver's serving certificate.
    pub serving_cert: PathBuf,
    /// The apiserver's serving key.
    pub serving_key: PathBuf,
    /// The admin client certificate (CN=admin, O=system:masters).
    pub admin_cert: PathBuf,
    /// The admin client key.
    pub admin_key: PathBuf,
    /// Service-account token signing key (private).
    pub sa_key: PathBuf,
    /// Service-account token verification key (public).
    pub sa_pub: PathBuf,
}

fn rc(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::Io(format!("writing {}", path.display()), e))
}

/// Generates a CA, a serving certificate for loopback and the given extra names, an admin client
/// certificate and a service-account key pair into `dir`.
pub fn generate(dir: &Path, extra_sans: &[String]) -> Result<Pki, Error> {
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca_params.distinguished_name.push(DnType::CommonName, "epslice-envtest-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rc)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut sans: Vec<String> = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sans.extend(extra_sans.iter().cloned());
    let mut serving = CertificateParams::new(sans).map_err(rc)?;
    for ip in ["127.0.0.1", "::1", "10.96.0.1"] {
        let ip: IpAddr = ip.parse().expect("literal IP");
        serving.subject_alt_names.push(SanType::IpAddress(ip));
    }
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().map_err(rc)?;
    let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(rc)?;

    let (admin_cert, admin_key) = client_cert(&issuer, "admin", &["system:masters"])?;

    let sa = KeyPair::generate().map_err(rc)?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.ca_key, &ca_key_pem)?;
    write(&pki.serving_cert, &serving_cert.pem())?;
    write(&pki.serving_key, &serving_key.serialize_pem())?;
    write(&pki.admin_cert, &admin_cert)?;
    write(&pki.admin_key, &admin_key)?;
    write(&pki.sa_key, &sa.serialize_pem())?;
    write(&pki.sa_pub, &sa.public_key_pem())?;
    Ok(pki)
}

/// A client certificate and key (PEM) for `user` in `groups`, signed by the CA.
fn client_cert(issuer: &Issuer<'_, KeyPair>, user: &str, groups: &[&str]) -> Result<(String, String), Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    params.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        params.distinguished_name.push(DnType::OrganizationName, *g);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.signed_by(&key, issuer).map_err(rc)?;
    Ok((cert.pem(), key.serialize_pem()))
}
