//! The local stack's certificate authority for MQTT over TLS. AWS IoT Core authenticates a device by a client
//! certificate; the local broker does the same, and accepts only certificates this CA issued.
//!
//! The CA lives in the stack's `mqtt/` directory (`LOCAL_MQTT_DIR` in `.local/stack.env`): `ca.pem` and `ca.key`, the
//! broker's own certificate (`broker.pem`, `broker.key`, for 127.0.0.1 and localhost) and the Device Shadow service's
//! client certificate (`service.pem`, `service.key`, common name [`SERVICE_IDENTITY`]). A device's certificate names
//! the thing in its common name: the broker takes that as the client's identity and its client id.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The common name of the Device Shadow service's certificate: `$` cannot start a thing's name, so no device can
/// hold this identity.
pub const SERVICE_IDENTITY: &str = "$shadow-service";

/// The file names AWS hands out with a thing's certificate, and that the seed's scripts read.
pub const CERTIFICATE_FILE: &str = "certificate.pem.crt";
pub const PRIVATE_KEY_FILE: &str = "private.pem.key";
pub const ROOT_CA_FILE: &str = "AmazonRootCA1.pem";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the certificate could not be made")]
    Certificate(#[source] rcgen::Error),
    #[error("{0} is not a thing name")]
    ThingName(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate: String,
    pub private_key: String,
}

/// The local CA, loaded from (or created in) its directory.
pub struct LocalCa {
    dir: PathBuf,
    certificate: String,
    issuer: Issuer<'static, KeyPair>,
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.display().to_string(), source })
}

fn write(path: &Path, text: &str) -> Result<(), CaError> {
    std::fs::write(path, text).map_err(|source| CaError::Io { path: path.display().to_string(), source })
}

/// A private key, readable by its owner only.
fn write_key(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CaError::Io { path: path.display().to_string(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

impl LocalCa {
    /// The CA in `dir`, created there (with the broker's and the service's certificates) when `dir` has none yet.
    pub fn open_or_create(dir: &Path) -> Result<Self, CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.display().to_string(), source })?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !(cert_path.exists() && key_path.exists()) {
            let (certificate, key) = new_ca("shadow-fleet local CA")?;
            write_key(&key_path, &key)?;
            write(&cert_path, &certificate)?;
        }
        let ca = Self::open(dir)?;
        if !dir.join("broker.pem").exists() {
            let broker = ca.issue_server()?;
            write_key(&dir.join("broker.key"), &broker.private_key)?;
            write(&dir.join("broker.pem"), &broker.certificate)?;
        }
        if !dir.join("service.pem").exists() {
            let service = ca.issue_client(SERVICE_IDENTITY)?;
            write_key(&dir.join("service.key"), &service.private_key)?;
            write(&dir.join("service.pem"), &service.certificate)?;
        }
        Ok(ca)
    }

    /// The CA already in `dir`.
    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let certificate = read(&dir.join("ca.pem"))?;
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?).map_err(CaError::Certificate)?;
        let issuer = Issuer::from_ca_cert_pem(&certificate, key).map_err(CaError::Certificate)?;
        Ok(Self { dir: dir.to_owned(), certificate, issuer })
    }

    /// The CA's certificate (PEM): what a client trusts the broker by, under the name `AmazonRootCA1.pem`.
    pub fn certificate(&self) -> &str {
        &self.certificate
    }

    /// The Device Shadow service's certificate and key, made with the CA.
    pub fn service(&self) -> Result<Issued, CaError> {
        Ok(Issued {
            certificate: read(&self.dir.join("service.pem"))?,
            private_key: read(&self.dir.join("service.key"))?,
        })
    }

    /// A device certificate for `thing` (its common name), as AWS IoT's CreateKeysAndCertificate hands one out.
    pub fn issue_thing(&self, thing: &str) -> Result<Issued, CaError> {
        shadow_core::ThingName::parse(thing).map_err(|_| CaError::ThingName(thing.to_owned()))?;
        self.issue_client(thing)
    }

    /// Writes `thing`'s certificate, key and the CA into `out` under AWS's file names; returns the three paths.
    pub fn write_thing(&self, thing: &str, out: &Path) -> Result<[PathBuf; 3], CaError> {
        let issued = self.issue_thing(thing)?;
        std::fs::create_dir_all(out).map_err(|source| CaError::Io { path: out.display().to_string(), source })?;
        let paths = [out.join(CERTIFICATE_FILE), out.join(PRIVATE_KEY_FILE), out.join(ROOT_CA_FILE)];
        write(&paths[0], &issued.certificate)?;
        write_key(&paths[1], &issued.private_key)?;
        write(&paths[2], &self.certificate)?;
        Ok(paths)
    }

    fn issue_client(&self, common_name: &str) -> Result<Issued, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Certificate)?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&params)
    }

    fn issue_server(&self) -> Result<Issued, CaError> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(CaError::Certificate)?;
        params.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name = name("shadow-fleet local broker");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&params)
    }

    fn sign(&self, params: &CertificateParams) -> Result<Issued, CaError> {
        let key = KeyPair::generate().map_err(CaError::Certificate)?;
        let certificate = params.signed_by(&key, &self.issuer).map_err(CaError::Certificate)?;
        Ok(Issued { certificate: certificate.pem(), private_key: key.serialize_pem() })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A self-signed CA: its certificate and key, PEM. Also what a test uses to make a CA the broker does not trust.
pub fn new_ca(common_name: &str) -> Result<(String, String), CaError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(CaError::Certificate)?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().map_err(CaError::Certificate)?;
    let certificate = params.self_signed(&key).map_err(CaError::Certificate)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thing_certificate_names_the_thing_and_is_signed_by_the_ca() {
        let dir = std::env::temp_dir().join(crate::unique("ca"));
        let ca = LocalCa::open_or_create(&dir).expect("a CA");
        let again = LocalCa::open_or_create(&dir).expect("the same CA");
        assert_eq!(ca.certificate(), again.certificate(), "a second setup keeps the CA");
        let out = dir.join("Test-Device");
        let paths = ca.write_thing("Test-Device", &out).expect("a thing's certificate");
        let names: Vec<_> = paths.iter().filter_map(|p| p.file_name()?.to_str()).collect();
        assert_eq!(names, [CERTIFICATE_FILE, PRIVATE_KEY_FILE, ROOT_CA_FILE]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths[1]).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode, Some(0o600), "the private key is its owner's only");
        assert!(ca.issue_thing("no/slash").is_err());
        assert!(ca.issue_thing("$shadow-service").is_err(), "nobody gets the service's identity");
        let _ = std::fs::remove_dir_all(dir);
    }
}
