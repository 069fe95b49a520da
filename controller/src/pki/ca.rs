//! The device CA: issues the controller's server certificate, agent client certificates from their CSRs, and
//! admin client certificates. ECDSA P-256 throughout, signed with aws-lc-rs through rcgen.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

use crate::error::{write_atomic, Error, Result};

/// A loaded CA: certificate and signing key.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// A freshly issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// PEM private key, when the CA made the key (server and admin certificates).
    pub key_pem: Option<String>,
    pub not_after: i64,
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // aws-lc-rs' system RNG does not fail on supported platforms; a zero serial would still be unique enough
    // alongside the fingerprint index, but keep the high bit clear so it stays positive.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, valid_for: Duration) -> i64 {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(valid_for.as_secs() as i64);
    params.not_after.unix_timestamp()
}

impl Ca {
    /// Make a new CA valid for ten years.
    pub fn generate(name: &str) -> Result<Ca> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "rollcall");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        validity(&mut params, Duration::from_secs(10 * 365 * 86400));
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
        })
    }

    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Ca> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.to_owned(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let key = KeyPair::from_pem(&read(key_path)?)
            .map_err(|e| Error::Pki(format!("{}: {e}", key_path.display())))?;
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Pki(format!("{}: {e}", cert_path.display())))?;
        Ok(Ca {
            cert_der,
            cert_pem,
            key,
        })
    }

    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<()> {
        write_atomic(cert_path, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(key_path, self.key.serialize_pem().as_bytes(), 0o600)
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// sha256 of the CA certificate: the pin carried in enrollment tokens.
    pub fn fingerprint(&self) -> String {
        rollcall_proto::sha256_hex(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// The controller's TLS server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String], valid_for: Duration) -> Result<Issued> {
        let mut params = leaf_params(
            "rollcall controller",
            ExtendedKeyUsagePurpose::ServerAuth,
            valid_for,
        );
        params.subject_alt_names = CertificateParams::new(names.to_vec())?.subject_alt_names;
        self.issue_with_new_key(params)
    }

    /// A client certificate for `subject` with a key made here (admin credentials).
    pub fn issue_client(&self, subject: &str, valid_for: Duration) -> Result<Issued> {
        self.issue_with_new_key(leaf_params(
            subject,
            ExtendedKeyUsagePurpose::ClientAuth,
            valid_for,
        ))
    }

    fn issue_with_new_key(&self, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
            not_after: params.not_after.unix_timestamp(),
        })
    }

    /// Sign an agent's CSR. Only the CSR's public key is used: subject, usage and lifetime are the controller's.
    pub fn sign_csr(&self, csr_der: &[u8], subject: &str, valid_for: Duration) -> Result<Issued> {
        let der = CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| Error::Pki(format!("the certificate signing request is invalid: {e}")))?;
        csr.params = leaf_params(subject, ExtendedKeyUsagePurpose::ClientAuth, valid_for);
        let not_after = csr.params.not_after.unix_timestamp();
        let cert = csr.signed_by(&self.issuer()?)?;
        Ok(Issued {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: None,
            not_after,
        })
    }
}

/// An end-entity certificate for `subject` with one extended key usage.
fn leaf_params(
    subject: &str,
    usage: ExtendedKeyUsagePurpose,
    valid_for: Duration,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, subject);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, valid_for);
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_a_csr_and_refuses_garbage() {
        let ca = Ca::generate("test CA").unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let issued = ca
            .sign_csr(csr.der(), "agent-1", Duration::from_secs(3600))
            .unwrap();
        assert!(issued.not_after > OffsetDateTime::now_utc().unix_timestamp());
        let e = ca
            .sign_csr(b"not a csr", "agent-1", Duration::from_secs(3600))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate signing request is invalid"),
            "{e}"
        );
    }

    #[test]
    fn save_and_load_keep_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("test CA").unwrap();
        ca.save(&dir.path().join("ca.crt"), &dir.path().join("ca.key"))
            .unwrap();
        let loaded = Ca::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
        assert_eq!(ca.fingerprint(), loaded.fingerprint());
    }
}
