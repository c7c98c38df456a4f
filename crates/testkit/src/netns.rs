//! Networks of Linux network namespaces for the tests of publishers behind NATs and
//! firewalls (root only): namespaces joined by veth pairs, nftables rulesets (NAT,
//! firewalls, packet loss), `tc tbf` for a capped link, and programs run inside a
//! namespace as [`Process`]es.
//!
//! [`Network::home_to_cloud`] builds the one topology the tests use:
//!
//! ```text
//!  root ns ── ctl ── publisher ── home router ──── internet router ──── cloud edge ── gateway
//!  (WebDriver)       .18  (LAN)   .17  masquerade  .33    │    (loss)   .50 1:1 NAT   .66
//!                                      .34 (public)       │                 public .80
//!                                                         └── turn .98 (a TURN server)
//! ```
//!
//! Each network has names of its own (`nt<pid>x<n><role>`) and a /24 of its own in
//! 10.0.0.0/8, so that tests run side by side. Everything goes when the network is
//! dropped, also when a test panics: the processes left in its namespaces, then the
//! namespaces with their links and rulesets. A namespace whose test process is gone
//! (killed before it could clean up) is removed by the next network made.

use crate::{Error, Process};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The prefix of every namespace (and root-side link) this module makes.
const PREFIX: &str = "nt";

/// Networks made by this process so far (part of each one's names).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `program args` to its end; its output when it fails.
fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    use std::io::Write;
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            what: what.clone(),
            hint: "make test-deps installs iproute2 and nftables".into(),
            source,
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(Error::io(what.clone()))?;
    }
    let output = child.wait_with_output().map_err(Error::io(what.clone()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Failed {
            what: match input {
                Some(input) => format!("{what} <<EOF\n{input}EOF"),
                None => what,
            },
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The pid in a name this module made (`nt<pid>x<n><role>`).
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split_once('x')?.0.parse().ok()
}

/// Kills every process in namespace `name` (SIGKILL) and removes it.
fn remove_namespace(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
    // A process killed just now may hold it for a moment; the deletion unmounts the
    // name either way, and the kernel frees the namespace with its last process.
    let _ = run("ip", &["netns", "delete", name]);
}

/// Removes the namespaces of test processes that are gone.
fn sweep() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(pid) = pid_of(name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            remove_namespace(name);
        }
    }
}

/// One network namespace of a [`Network`].
#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    /// `program` run inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// The same command (program, arguments, environment, directory) run inside the
    /// namespace. `ip netns exec` execs the program: signals sent to the process reach
    /// it.
    pub fn wrap(&self, command: &Command) -> Command {
        let mut inside = Command::new("ip");
        inside
            .args(["netns", "exec", &self.name])
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => inside.env(key, value),
                None => inside.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            inside.current_dir(dir);
        }
        inside
    }

    /// A process (see [`Process::new`]) whose command runs inside the namespace.
    pub fn process(
        &self,
        what: &str,
        make: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Process {
        let namespace = self.clone();
        Process::new(what, move || namespace.wrap(&make()))
    }

    /// Runs `program args` inside the namespace to its end: its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip ARGS` on the namespace (`ip -n NAME ARGS`).
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Applies an nftables ruleset (`nft -f -`) inside the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<(), Error> {
        run_with_input(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            Some(ruleset),
        )
        .map(drop)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key_value: &str) -> Result<(), Error> {
        self.run("sysctl", &["-qw", key_value]).map(drop)
    }
}

/// What the publisher's network and the gateway's firewall let through.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// The TCP ports the gateway's firewall lets in (from anywhere).
    pub gateway_tcp: &'a [u16],
    /// The UDP ports the gateway's firewall lets in.
    pub gateway_udp: &'a [u16],
    /// The publisher's network drops every UDP packet it sends out.
    pub publisher_udp_blocked: bool,
    /// The publisher's network lets out only TCP to these hosts and ports (nothing else,
    /// no UDP).
    pub publisher_tcp_only_to: Option<&'a [(Host, u16)]>,
    /// A host on the internet, on a clean path to the gateway (no loss, no cap): for a
    /// TURN server, or a publisher beside the one under test.
    pub turn: bool,
    /// The publisher's uplink (the home router's side toward the internet) is capped at
    /// this rate (`tc tbf`), with a queue of 400 ms at that rate, as a home router's or
    /// a mobile uplink's buffer holds (a key frame waits in it rather than being dropped).
    pub cap_kbit: Option<u32>,
    /// The internet router drops this share of the packets between home and cloud, each
    /// way (nftables `numgen random`).
    pub loss_percent: Option<u32>,
}

/// A host of the network, as the publisher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The gateway's public address.
    Gateway,
    /// The TURN server's address.
    Turn,
}

/// The addresses of a [`Network`].
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The publisher's address on its home LAN.
    pub publisher: Ipv4Addr,
    /// The home router's public address (the publisher's, as the internet sees it).
    pub home_public: Ipv4Addr,
    /// The gateway's address in the cloud (on its only interface).
    pub gateway_private: Ipv4Addr,
    /// The gateway's public address, mapped 1:1 onto the private one by the cloud edge.
    pub gateway_public: Ipv4Addr,
    /// The TURN server's address, when the network has one.
    pub turn: Option<Ipv4Addr>,
    /// The root namespace's end of the control link to the publisher (WebDriver).
    pub control_root: Ipv4Addr,
    /// The publisher's end of the control link.
    pub control_publisher: Ipv4Addr,
}

/// A publisher's home network and a gateway in the cloud, joined by an internet router;
/// removed with everything in it when dropped.
pub struct Network {
    pub publisher: Namespace,
    pub home: Namespace,
    pub internet: Namespace,
    pub edge: Namespace,
    pub gateway: Namespace,
    pub turn: Option<Namespace>,
    pub addresses: Addresses,
    /// Every namespace made so far, in the order made (removed in reverse).
    made: Vec<String>,
}

impl Network {
    /// Builds the network `options` describe (see the module's picture).
    pub fn home_to_cloud(options: Options) -> Result<Network, Error> {
        sweep();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let base = format!("{PREFIX}{pid}x{n}");
        let block = Self::free_block(pid, n)?;
        let at = |host: u8| Ipv4Addr::new(10, block.0, block.1, host);
        let turn_ip = options.turn.then(|| at(98));
        let addresses = Addresses {
            control_root: at(1),
            control_publisher: at(2),
            publisher: at(18),
            home_public: at(34),
            gateway_private: at(66),
            gateway_public: at(80),
            turn: turn_ip,
        };
        let namespace = |role: &str| Namespace {
            name: format!("{base}{role}"),
        };
        let mut network = Network {
            publisher: namespace("p"),
            home: namespace("h"),
            internet: namespace("i"),
            edge: namespace("e"),
            gateway: namespace("g"),
            turn: options.turn.then(|| namespace("t")),
            addresses,
            made: Vec::new(),
        };
        // Dropped on an error below: what was made so far goes.
        network.build(&base, &options, at)?;
        Ok(network)
    }

    /// A /24 (10.A.B.0) from the pid and the counter that no address of the root
    /// namespace is in (the control link puts one there).
    fn free_block(pid: u32, n: u32) -> Result<(u8, u8), Error> {
        let taken = run("ip", &["-4", "-o", "addr", "show"])?;
        for attempt in 0..1000u32 {
            let value = (pid.wrapping_mul(31) + n.wrapping_mul(7) + attempt) % (200 * 256);
            let block = (16 + (value / 256) as u8, (value % 256) as u8);
            if !taken.contains(&format!(" 10.{}.{}.", block.0, block.1)) {
                return Ok(block);
            }
        }
        Err(Error::Failed {
            what: "a free 10.A.B.0/24 for a test network".into(),
            output: taken,
        })
    }

    fn add(&mut self, namespace: &Namespace) -> Result<(), Error> {
        run("ip", &["netns", "add", &namespace.name])?;
        self.made.push(namespace.name.clone());
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth pair from `a` (named `a_if`, address `a_ip/28`) to `b`.
    fn link(
        a: &Namespace,
        a_if: &str,
        a_ip: Ipv4Addr,
        b: &Namespace,
        b_if: &str,
        b_ip: Ipv4Addr,
    ) -> Result<(), Error> {
        a.ip(&[
            "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
        ])?;
        for (ns, name, ip) in [(a, a_if, a_ip), (b, b_if, b_ip)] {
            ns.ip(&["addr", "add", &format!("{ip}/28"), "dev", name])?;
            ns.ip(&["link", "set", name, "up"])?;
        }
        Ok(())
    }

    fn build(
        &mut self,
        base: &str,
        options: &Options,
        at: impl Fn(u8) -> Ipv4Addr,
    ) -> Result<(), Error> {
        let all: Vec<Namespace> = [
            &self.publisher,
            &self.home,
            &self.internet,
            &self.edge,
            &self.gateway,
        ]
        .into_iter()
        .chain(self.turn.as_ref())
        .cloned()
        .collect();
        for namespace in &all {
            self.add(namespace)?;
        }
        let (publisher, home, internet, edge, gateway) = (
            &self.publisher,
            &self.home,
            &self.internet,
            &self.edge,
            &self.gateway,
        );
        // The control link: the root namespace reaches the publisher's (WebDriver) on a
        // /30 of its own; the publisher has no route past it.
        run(
            "ip",
            &[
                "link",
                "add",
                base,
                "type",
                "veth",
                "peer",
                "name",
                "ctl",
                "netns",
                &publisher.name,
            ],
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{}/30", at(1)), "dev", base],
        )?;
        run("ip", &["link", "set", base, "up"])?;
        publisher.ip(&["addr", "add", &format!("{}/30", at(2)), "dev", "ctl"])?;
        publisher.ip(&["link", "set", "ctl", "up"])?;

        Self::link(home, "lan", at(17), publisher, "eth0", at(18))?;
        Self::link(internet, "home", at(33), home, "wan", at(34))?;
        Self::link(internet, "cloud", at(49), edge, "inet", at(50))?;
        Self::link(edge, "lan", at(65), gateway, "eth0", at(66))?;
        if let Some(turn) = &self.turn {
            Self::link(internet, "turn", at(97), turn, "eth0", at(98))?;
            turn.ip(&["route", "add", "default", "via", &at(97).to_string()])?;
        }
        publisher.ip(&["route", "add", "default", "via", &at(17).to_string()])?;
        home.ip(&["route", "add", "default", "via", &at(33).to_string()])?;
        edge.ip(&["route", "add", "default", "via", &at(49).to_string()])?;
        gateway.ip(&["route", "add", "default", "via", &at(65).to_string()])?;
        // The internet knows the gateway's public address, not the cloud's private
        // network, nor the home LAN.
        internet.ip(&[
            "route",
            "add",
            &format!("{}/32", at(80)),
            "via",
            &at(50).to_string(),
        ])?;
        for router in [home, internet, edge] {
            router.sysctl("net.ipv4.ip_forward=1")?;
        }

        // The home router: masquerade with random ports, and what the publisher's
        // network lets out.
        let mut forward = String::new();
        if let Some(allowed) = options.publisher_tcp_only_to {
            forward.push_str("    iifname \"lan\" ct state established,related accept\n");
            for (host, port) in allowed {
                let ip = match host {
                    Host::Gateway => at(80),
                    Host::Turn => turn_address(self.addresses.turn)?,
                };
                forward.push_str(&format!(
                    "    iifname \"lan\" ip daddr {ip} tcp dport {port} accept\n"
                ));
            }
            forward.push_str("    iifname \"lan\" drop\n");
        } else if options.publisher_udp_blocked {
            forward.push_str("    iifname \"lan\" meta l4proto udp drop\n");
        }
        home.nft(&format!(
            "table ip home {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" masquerade fully-random
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
{forward}  }}
}}
"
        ))?;
        if let Some(kbit) = options.cap_kbit {
            home.run(
                "tc",
                &[
                    "qdisc",
                    "add",
                    "dev",
                    "wan",
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbit}kbit"),
                    "burst",
                    "16kb",
                    "latency",
                    "400ms",
                ],
            )?;
        }

        // The internet: loss between home and cloud, each way.
        if let Some(percent) = options.loss_percent {
            internet.nft(&format!(
                "table ip internet {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"home\" numgen random mod 100 < {percent} drop
    oifname \"home\" numgen random mod 100 < {percent} drop
  }}
}}
"
            ))?;
        }

        // The cloud edge: the public address mapped 1:1 onto the gateway's.
        edge.nft(&format!(
            "table ip edge {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {public} dnat to {private}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {private} snat to {public}
  }}
}}
",
            public = at(80),
            private = at(66)
        ))?;

        // The gateway's firewall: only the given ports in.
        let ports = |list: &[u16]| {
            list.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut allowed = String::new();
        if !options.gateway_tcp.is_empty() {
            allowed.push_str(&format!(
                "    tcp dport {{ {} }} accept\n",
                ports(options.gateway_tcp)
            ));
        }
        if !options.gateway_udp.is_empty() {
            allowed.push_str(&format!(
                "    udp dport {{ {} }} accept\n",
                ports(options.gateway_udp)
            ));
        }
        gateway.nft(&format!(
            "table inet firewall {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif \"lo\" accept
    ct state established,related accept
{allowed}  }}
}}
"
        ))?;
        Ok(())
    }

    /// The namespaces, each with its role (for messages).
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        [
            &self.publisher,
            &self.home,
            &self.internet,
            &self.edge,
            &self.gateway,
        ]
        .into_iter()
        .chain(self.turn.as_ref())
    }

    /// The namespaces' rulesets, addresses and qdiscs, for a failing test's message.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for namespace in self.namespaces() {
            text.push_str(&format!("== {}\n", namespace.name));
            for (program, args) in [
                ("ip", &["-br", "addr"][..]),
                ("ip", &["route"][..]),
                ("nft", &["list", "ruleset"][..]),
                ("tc", &["-s", "qdisc"][..]),
            ] {
                text.push_str(
                    &namespace
                        .run(program, args)
                        .unwrap_or_else(|e| e.to_string()),
                );
            }
        }
        text
    }
}

fn turn_address(turn: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
    turn.ok_or_else(|| Error::Failed {
        what: "a rule for the TURN server".into(),
        output: "the network has no TURN server: set Options::turn".into(),
    })
}

impl Drop for Network {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- network ----\n{}", self.describe());
        }
        // The processes in each namespace first (a driver's browser, a server started
        // by hand), then the namespaces; the veth pairs, rulesets and qdiscs go with them.
        for name in self.made.iter().rev() {
            remove_namespace(name);
        }
    }
}

/// Debian's coturn (`turnserver`) with the TURN REST scheme (`use-auth-secret`), as the
/// README configures it: no TLS, no CLI, every private address denied as a peer but
/// `allowed_peer` (the gateway), so that it is no open relay.
pub struct Coturn {
    pub process: Process,
    pub address: Ipv4Addr,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// Starts coturn on `address:port` (TCP and UDP), inside `namespace` or in the test's
    /// own (loopback), with `secret`; waits until it listens.
    pub fn start(
        namespace: Option<&Namespace>,
        address: Ipv4Addr,
        port: u16,
        secret: &str,
        allowed_peer: Ipv4Addr,
    ) -> Result<Coturn, Error> {
        let dir = tempfile::tempdir().map_err(Error::io("coturn's directory"))?;
        let path = dir.path().to_path_buf();
        let secret = secret.to_string();
        let make = move || {
            let mut command = Command::new("turnserver");
            command
                .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
                // Each session and its user in the log.
                .arg("--verbose")
                .args(["--log-file", "stdout", "--realm", "gateway.test"])
                .arg("--use-auth-secret")
                .arg(format!("--static-auth-secret={secret}"))
                .arg(format!("--listening-ip={address}"))
                .arg(format!("--relay-ip={address}"))
                .arg(format!("--listening-port={port}"))
                .arg("--denied-peer-ip=10.0.0.0-10.255.255.255")
                .arg("--denied-peer-ip=172.16.0.0-172.31.255.255")
                .arg("--denied-peer-ip=192.168.0.0-192.168.255.255")
                .arg(format!("--allowed-peer-ip={allowed_peer}"))
                .arg("--db")
                .arg(path.join("turndb"))
                .arg("--pidfile")
                .arg(path.join("turnserver.pid"));
            command
        };
        let process = match namespace {
            Some(namespace) => namespace.process("coturn", make),
            None => Process::new("coturn", make),
        };
        let mut process = process
            .log_to(&dir.path().join("coturn.log"))
            .hint("make test-deps installs Debian's coturn")
            .spawn()?;
        let filter = format!("src {address}:{port}");
        let listens = || {
            let ss = ["-Hltn", filter.as_str()];
            match namespace {
                Some(namespace) => namespace.run("ss", &ss),
                None => run("ss", &ss),
            }
            .is_ok_and(|out| !out.trim().is_empty())
        };
        process.wait_until(std::time::Duration::from_secs(20), listens)?;
        Ok(Coturn {
            process,
            address,
            port,
            _dir: dir,
        })
    }

    /// Its `turn:` URL over `transport` (`udp`, `tcp`).
    pub fn url(&self, transport: &str) -> String {
        format!("turn:{}:{}?transport={transport}", self.address, self.port)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(pid_of("nt1234x5g"), Some(1234));
        assert_eq!(pid_of("other"), None);
        assert_eq!(pid_of("nt12x"), Some(12));
    }
}
