//! Test certificates, generated when a test runs (no private key is ever
//! committed): a CA, and certificates it signs for servers (valid for
//! 127.0.0.1 and localhost) and clients, written as PEM files.
#![allow(dead_code)]
// Test code writing files for the servers under test to read.
#![allow(clippy::disallowed_methods)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A certificate authority whose certificates land in `dir`.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate's PEM file.
    pub ca_file: PathBuf,
    dir: PathBuf,
}

/// A certificate and key on disk.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.crt`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign CA");
        let ca_file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        TestCa {
            cert,
            key,
            ca_file,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate for common name `cn`, valid for 127.0.0.1 and
    /// localhost (so it serves as a server, peer or client certificate),
    /// written as `<file>.crt` and `<file>.key`, replacing what was there.
    pub fn issue(&self, file: &str, cn: &str) -> Issued {
        let key = KeyPair::generate().expect("key");
        let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        let issued = Issued {
            cert_file: self.dir.join(format!("{file}.crt")),
            key_file: self.dir.join(format!("{file}.key")),
        };
        // Key first, then the certificate, each by rename: a server that
        // reloads in between sees either the old pair or the new one.
        write_atomically(&issued.key_file, &key.serialize_pem());
        write_atomically(&issued.cert_file, &cert.pem());
        issued
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

impl Issued {
    /// etcdctl's flags to present this certificate and trust `ca`.
    pub fn etcdctl_flags(&self, ca: &Path) -> Vec<String> {
        vec![
            format!("--cacert={}", ca.display()),
            format!("--cert={}", self.cert_file.display()),
            format!("--key={}", self.key_file.display()),
        ]
    }
}
