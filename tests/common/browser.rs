//! Real browsers for the page tests: headless Chromium (through Debian's `chromedriver`)
//! and Firefox ESR (through `geckodriver`), with fake cameras and microphones, driven
//! over WebDriver with fantoccini behind a small blocking API. Each `Browser` starts its
//! own driver on a free loopback port (or in a namespace of a test network), in a
//! process group of its own, and stops the driver and the browser with it when dropped,
//! also when a test panics.

use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::Process;
use webrtc_gateway_testkit::netns::Namespace;

/// The browsers the page tests run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserKind {
    Chromium,
    Firefox,
}

/// How long a WebDriver command may take before the test gives up on the browser.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless browser with a fake camera and microphone, and its WebDriver driver.
pub struct Browser {
    pub kind: BrowserKind,
    runtime: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    /// In its own process group, so that the browser it starts goes with it.
    driver: Process,
    /// The profile, the driver's temporary files and its log.
    dir: tempfile::TempDir,
}

/// Where a browser runs when not in the test's own network namespace: a namespace of a
/// test network, whose driver the test reaches over the network's control link.
pub struct Place<'a> {
    pub namespace: &'a Namespace,
    /// The namespace's end of the control link (the driver listens there).
    pub address: Ipv4Addr,
    /// The test's end (the one address the driver takes commands from).
    pub from: Ipv4Addr,
}

impl Browser {
    pub fn start(kind: BrowserKind) -> Browser {
        Self::start_in(kind, None, &[])
    }

    /// A browser in `place` (Chromium only), with `args` added to its command line.
    pub fn start_in(kind: BrowserKind, place: Option<Place>, args: &[String]) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let port = match place {
            // A namespace of its own: nothing else listens there.
            Some(_) => 9515,
            None => super::free_tcp_port(),
        };
        let websocket_port = super::free_tcp_port();
        let profiles = dir.path().to_path_buf();
        let allowed = place.as_ref().map(|place| place.from);
        let make = move || {
            let mut command = match kind {
                BrowserKind::Chromium => {
                    let mut c = Command::new("chromedriver");
                    c.arg(format!("--port={port}"));
                    if let Some(from) = allowed {
                        c.arg(format!("--allowed-ips={from}"));
                    }
                    c
                }
                BrowserKind::Firefox => {
                    let mut c = Command::new(geckodriver());
                    c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                        .args(["--websocket-port", &websocket_port.to_string()])
                        .arg("--profile-root")
                        .arg(&profiles);
                    c
                }
            };
            // Its temporary profiles in our directory, so that they go too.
            command.env("TMPDIR", &profiles);
            command
        };
        let name = format!("{kind:?} driver");
        let driver = match &place {
            Some(place) => {
                assert_eq!(
                    kind,
                    BrowserKind::Chromium,
                    "only Chromium runs in a namespace"
                );
                place.namespace.process(&name, make)
            }
            None => Process::new(&name, make),
        };
        let mut driver = driver
            .log_to(&dir.path().join("driver.log"))
            .hint("make test-deps installs it")
            .group()
            .quiet()
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let host = place.as_ref().map_or(Ipv4Addr::LOCALHOST, |p| p.address);
        let listening = driver.wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect((host, port)).is_ok()
        });
        if let Err(e) = listening {
            panic!("{kind:?} driver never listened on {host}:{port}: {e}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Browser {
            kind,
            runtime,
            client: None,
            driver,
            dir,
        };
        let capabilities = browser.capabilities(args);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://{host}:{port}");
        let client = browser.runtime.block_on(async {
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                fantoccini::ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .await
        });
        match client {
            Ok(Ok(client)) => browser.client = Some(client),
            Ok(Err(e)) => panic!("{kind:?} did not start: {e}\n{}", browser.driver_log()),
            Err(_) => panic!("{kind:?} did not start in time\n{}", browser.driver_log()),
        }
        browser
    }

    fn capabilities(&self, extra: &[String]) -> serde_json::Map<String, Value> {
        let mut options = match self.kind {
            BrowserKind::Chromium => json!({
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--disable-features=MediaRouter,OptimizationHints",
                        "--use-fake-ui-for-media-stream",
                        "--use-fake-device-for-media-stream",
                        "--autoplay-policy=no-user-gesture-required",
                        "--ignore-certificate-errors",
                        format!("--user-data-dir={}", self.dir.path().join("profile").display()),
                    ],
                },
            }),
            BrowserKind::Firefox => json!({
                "moz:firefoxOptions": {
                    "binary": "/usr/bin/firefox-esr",
                    "args": ["-headless"],
                    "prefs": firefox_prefs(),
                    "log": { "level": "warn" },
                },
            }),
        };
        let args = match self.kind {
            BrowserKind::Chromium => &mut options["goog:chromeOptions"]["args"],
            BrowserKind::Firefox => &mut options["moz:firefoxOptions"]["args"],
        };
        if let Some(args) = args.as_array_mut() {
            args.extend(extra.iter().map(|arg| json!(arg)));
        }
        let mut capabilities = options.as_object().unwrap().clone();
        // The gateway's self-signed certificate.
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        capabilities
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("a WebDriver session")
    }

    /// Runs one WebDriver command, with a deadline.
    fn run<T>(
        &self,
        what: &str,
        command: impl Future<Output = Result<T, fantoccini::error::CmdError>>,
    ) -> Result<T, String> {
        self.runtime
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, command).await })
            .map_err(|_| format!("{what}: no answer from {:?}", self.kind))?
            .map_err(|e| format!("{what}: {e}"))
    }

    /// Opens `url` and waits for the page to load.
    pub fn open(&mut self, url: &str) {
        let client = self.client();
        self.run("open", client.goto(url))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Evaluates a JavaScript expression in the page; a promise is awaited.
    pub fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let client = self.client();
        let script = format!("return ({expression});");
        self.run(expression, client.execute(&script, Vec::new()))
    }

    /// Evaluates a JavaScript expression in the page (awaiting a promise); panics when it
    /// throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until `expression` gives `want`; returns the last value on timeout (an
    /// error the expression threw, as a string).
    pub fn wait_for(&mut self, expression: &str, want: &Value, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let value = self.try_eval(expression).unwrap_or_else(Value::String);
            if &value == want || start.elapsed() > timeout {
                return value;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&mut self, path: &Path) {
        let client = self.client();
        let png = self
            .run("screenshot", client.screenshot())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(path, png).unwrap();
    }

    /// The driver's output (with the browser's, for geckodriver).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("driver.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes the browser and removes the driver's profile; then
        // everything left in the group goes.
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        self.driver.kill();
        if std::thread::panicking() {
            let log = self.driver_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- {:?} driver log (last lines) ----\n{}",
                self.kind,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// geckodriver: the one `make test-deps` installs in `target/tools`, or one on the PATH.
fn geckodriver() -> PathBuf {
    let installed = super::root_path("target/tools/bin/geckodriver");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("geckodriver")
    }
}

/// Firefox's fake devices, ICE on loopback, and none of the features that reach the
/// network on their own (the tests run on loopback only, often with no network at all).
fn firefox_prefs() -> Value {
    json!({
        "media.navigator.streams.fake": true,
        "media.navigator.permission.disabled": true,
        "media.peerconnection.ice.loopback": true,
        "media.peerconnection.ice.obfuscate_host_addresses": false,
        "media.autoplay.default": 0,
        "media.gmp-manager.updateEnabled": false,
        "app.update.disabledForTesting": true,
        "app.update.auto": false,
        "browser.shell.checkDefaultBrowser": false,
        "browser.startup.homepage_override.mstone": "ignore",
        "browser.aboutwelcome.enabled": false,
        "browser.newtabpage.enabled": false,
        "browser.search.update": false,
        "browser.region.update.enabled": false,
        "browser.region.network.url": "",
        "browser.safebrowsing.malware.enabled": false,
        "browser.safebrowsing.phishing.enabled": false,
        "browser.safebrowsing.downloads.enabled": false,
        "browser.safebrowsing.blockedURIs.enabled": false,
        "browser.safebrowsing.provider.mozilla.updateURL": "",
        "datareporting.policy.dataSubmissionEnabled": false,
        "datareporting.healthreport.uploadEnabled": false,
        "toolkit.telemetry.enabled": false,
        "toolkit.telemetry.unified": false,
        "toolkit.telemetry.archive.enabled": false,
        "toolkit.telemetry.server": "",
        "app.normandy.enabled": false,
        "app.shield.optoutstudies.enabled": false,
        "messaging-system.rsexperimentloader.enabled": false,
        "extensions.update.enabled": false,
        "extensions.getAddons.cache.enabled": false,
        "extensions.blocklist.enabled": false,
        "services.settings.server": "data:,#remote-settings-dummy/v1",
        "network.captive-portal-service.enabled": false,
        "network.connectivity-service.enabled": false,
        "network.trr.mode": 5,
        "network.dns.disablePrefetch": true,
        "network.prefetch-next": false,
        "network.http.speculative-parallel-limit": 0,
    })
}
