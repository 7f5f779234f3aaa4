//! A private CA of the test's own (made with `openssl`), as managed Redis services use,
//! and what the test's Redis processes and clients need to speak TLS with it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl` with `args` in `dir`; panics saying how to get it when it is missing.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run openssl ({e}). The TLS tests make their certificates with it: \
                 install it first, e.g. `apt-get install -y openssl`"
            )
        });
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, all signed by the CA, in a directory of their own.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    pub fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=wx-jssdk test CA",
        ];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &ca);
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let ext = format!("{name}.ext");
            std::fs::write(
                d.join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                     extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                ),
            )
            .unwrap();
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let mut request = vec!["req", "-subj", "/CN=localhost", "-keyout", &key];
            request.extend(ec);
            request.extend(["-out", &csr]);
            openssl(d, &request);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            );
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The options of a `redis-server` (or sentinel) that listens on `port` with TLS
    /// only: its certificate from this CA, clients must show one of this CA, and it
    /// shows the client certificate itself where it connects to other servers
    /// (replication, the cluster bus, a sentinel to the data nodes). As pairs, for the
    /// command line (`--name value`) or a configuration file (`name value`).
    pub fn server_options(&self, port: u16) -> Vec<(&'static str, String)> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            ("port", "0".into()),
            ("tls-port", port.to_string()),
            ("tls-cert-file", file("server.crt")),
            ("tls-key-file", file("server.key")),
            ("tls-client-cert-file", file("client.crt")),
            ("tls-client-key-file", file("client.key")),
            ("tls-ca-cert-file", file("ca.crt")),
            ("tls-auth-clients", "yes".into()),
            ("tls-replication", "yes".into()),
            ("tls-cluster", "yes".into()),
        ]
    }

    /// `redis-cli`'s options to connect with TLS, verified with this CA.
    pub fn cli_options(&self) -> Vec<String> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            "--tls".into(),
            "--cacert".into(),
            file("ca.crt"),
            "--cert".into(),
            file("client.crt"),
            "--key".into(),
            file("client.key"),
        ]
    }

    /// The CA and the client certificate, as the redis crate takes them.
    pub fn for_redis(&self) -> redis::TlsCertificates {
        let read = |name: &str| std::fs::read(self.path(name)).expect("a certificate file");
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: read("client.crt"),
                client_key: read("client.key"),
            }),
            root_cert: Some(read("ca.crt")),
        }
    }

    /// A client of the TLS server on `port`.
    pub fn client(&self, port: u16) -> redis::Client {
        redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), self.for_redis())
            .expect("a TLS client")
    }

    /// The service's settings that name these files: the CA and the client
    /// certificate.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let file = |name: &str| self.path(name).display().to_string();
        vec![
            ("redis.tls_ca_file", file("ca.crt")),
            ("redis.tls_cert_file", file("client.crt")),
            ("redis.tls_key_file", file("client.key")),
        ]
    }
}
