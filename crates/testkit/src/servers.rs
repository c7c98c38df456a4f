//! Real servers beside the gateway (Varnish, an S3 store, Redis, HAProxy), each started
//! on a free loopback port in a directory of its own, and stopped with SIGTERM (then
//! SIGKILL) when dropped.

use crate::{Error, Process, free_tcp_port, readme, root_path};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process listening on `port`, with its directory.
pub struct Server {
    pub process: Process,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts the command `make` builds from the server's port and directory, and waits
    /// until its port accepts connections; `hint` says what installs it.
    pub fn start(
        name: &str,
        make: impl Fn(u16, &Path) -> Command + Send + Sync + 'static,
        hint: &str,
    ) -> Result<Server, Error> {
        let dir = tempfile::tempdir().map_err(Error::io("a server's directory"))?;
        let port = free_tcp_port();
        let path = dir.path().to_path_buf();
        let process = Process::new(name, move || make(port, &path))
            .log_to(&dir.path().join(format!("{name}.log")))
            .hint(hint)
            .gentle();
        let mut server = Server { process, port, dir };
        server.start_again()?;
        Ok(server)
    }

    /// Starts the server (again, after [`Server::stop`]) on the same port and directory.
    pub fn start_again(&mut self) -> Result<(), Error> {
        self.process.start()?;
        self.process.wait_port(self.port, LISTEN_TIMEOUT)
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Varnish from Debian with the README's configuration in front of `backend_port`.
pub fn varnish(backend_port: u16) -> Result<Server, Error> {
    let vcl = readme::varnish_vcl(backend_port)?;
    Server::start(
        "varnish",
        move |port, dir| {
            let path = dir.join("gateway.vcl");
            // Written where varnishd reads it; a failure shows as varnishd's own error.
            let _ = std::fs::write(&path, &vcl);
            let mut command = Command::new("varnishd");
            command
                .args(["-F", "-j", "none"])
                .args(["-a", &format!("127.0.0.1:{port}")])
                .arg("-f")
                .arg(&path)
                .arg("-n")
                .arg(dir.join("varnish"))
                .args(["-s", "malloc,256m"]);
            command
        },
        "make test-deps installs Debian's varnish",
    )
}

/// The access key of the S3 store.
pub const S3_ACCESS_KEY: &str = "gateway-tests";
pub const S3_SECRET_KEY: &str = "gateway-tests-secret";
/// The bucket it has.
pub const S3_BUCKET: &str = "recordings";

/// An S3-compatible store (`s3s-fs`, which checks SigV4 signatures), with one bucket,
/// its objects plain files under `dir/data/<bucket>/`.
pub fn s3_store() -> Result<Server, Error> {
    Server::start(
        "s3s-fs",
        |port, dir| {
            let _ = std::fs::create_dir_all(dir.join("data").join(S3_BUCKET));
            let mut command = Command::new(root_path("target/tools/bin/s3s-fs"));
            command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                .arg(dir.join("data"));
            command
        },
        "make test-deps installs s3s-fs into target/tools",
    )
}

/// Redis from Debian, on loopback, keeping nothing on disk, with `password` required if
/// one is given.
pub fn redis(password: Option<&str>) -> Result<Server, Error> {
    let password = password.map(str::to_string);
    Server::start(
        "redis",
        move |port, dir| {
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir);
            if let Some(password) = &password {
                command.args(["--requirepass", password]);
            }
            command
        },
        "make test-deps installs Debian's redis-server",
    )
}

/// Redis from Debian speaking only TLS, with a self-signed certificate for 127.0.0.1
/// (no authority vouches for it), with `password` required.
pub fn redis_tls(password: &str) -> Result<Server, Error> {
    let certificate = |source| Error::Certificate {
        what: "redis-tls".into(),
        source,
    };
    let key = rcgen::KeyPair::generate().map_err(certificate)?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .and_then(|params| params.self_signed(&key))
        .map_err(certificate)?;
    let (cert, key) = (cert.pem(), key.serialize_pem());
    let password = password.to_string();
    Server::start(
        "redis-tls",
        move |port, dir| {
            let _ = std::fs::write(dir.join("cert.pem"), &cert);
            let _ = std::fs::write(dir.join("key.pem"), &key);
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(dir.join("cert.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("key.pem"))
                .args(["--save", "", "--appendonly", "no"])
                .args(["--requirepass", &password])
                .arg("--dir")
                .arg(dir);
            command
        },
        "make test-deps installs Debian's redis-server",
    )
}

/// HAProxy from Debian with the README's configuration in front of `backends`.
pub fn haproxy(backends: &[u16]) -> Result<Server, Error> {
    let backends = backends.to_vec();
    // Read before starting: a README without the block fails here, not in HAProxy.
    readme::haproxy_config(0, &backends)?;
    Server::start(
        "haproxy",
        move |port, dir| {
            let config = dir.join("haproxy.cfg");
            if let Ok(text) = readme::haproxy_config(port, &backends) {
                let _ = std::fs::write(&config, text);
            }
            let mut command = Command::new("haproxy");
            command.arg("-db").arg("-f").arg(&config);
            command
        },
        "make test-deps installs Debian's haproxy",
    )
}
