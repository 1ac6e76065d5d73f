//! Hosts on a LAN for multi-host tests: network namespaces on a bridge, each running its own
//! `a2a serve --listen` with its own home, cgroup top and `--node-name`.
//!
//! Layout (all names carry this process's pid and a counter, so parallel tests and test
//! binaries never collide):
//! - a hub namespace `a2a-PID-N-hub` holding the bridge `br0` (no address, no uplink: nothing
//!   leaves the namespaces, and the host's own network never sees a packet);
//! - per host a namespace `a2a-PID-N-hI` with `lo` up and `eth0`, a veth whose peer `vI` is a
//!   port of the bridge, addresses `10.77.0.I/24` and `fd77::I/64` (the same in every test:
//!   each test has its own bridge), and a route for `224.0.0.0/4` on `eth0` so IPv4 multicast
//!   (mDNS) leaves by it (IPv6's `ff02::fb` is link-scoped and needs none).
//!
//! Processes are started in a namespace with `nsenter --net` (not `ip netns exec`, which
//! remounts /sys and would hide the cgroup tree). Dropping the [`Lan`] (also when a test's
//! assert fails) kills every process in its namespaces (daemons and their agents), removes
//! the cgroup tops and deletes the namespaces, which takes the veths and the bridge with them.
//! Namespaces left by a test process that was killed outright are deleted by the next `Lan`.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), `ip` (iproute2) and `nsenter` (util-linux).
#![allow(dead_code)]

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PREFIX: &str = "a2a-";

/// Runs `ip ARGS`, failing the test with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("running `ip {}`: {e}; the multi-host tests need iproute2 (apt-get install iproute2)", args.join(" "))
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (the multi-host tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The namespaces that exist.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// Pids of the processes in namespace `ns`.
fn pids_in(ns: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces of test processes that no longer run (a test killed outright).
fn remove_stale() {
    for ns in namespaces() {
        let Some(rest) = ns.strip_prefix(PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if !alive(pid) {
            for p in pids_in(&ns) {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// One host of a [`Lan`].
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    /// Its IPv6 address (`fd77::I`).
    pub ip6: String,
    pub node: String,
    pub home: PathBuf,
    /// The cgroup top of its daemon.
    pub top: String,
    daemon: Option<Child>,
    /// The URL its daemon printed.
    pub url: Option<String>,
}

/// N hosts in namespaces on one bridge; see the module's documentation.
pub struct Lan {
    pub id: String,
    hub: String,
    pub hosts: Vec<Host>,
    dir: tempfile::TempDir,
}

impl Lan {
    /// Creates the bridge and `n` host namespaces (no daemon started yet).
    pub fn new(n: usize) -> Lan {
        assert!((1..=200).contains(&n), "a Lan has 1 to 200 hosts");
        static COUNT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let id = format!("{PREFIX}{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        // Homes outside /tmp: agents get a private /tmp.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let hub = format!("{id}-hub");
        // From here on, whatever was made is removed on drop, even if a step fails.
        let mut lan = Lan { id: id.clone(), hub: hub.clone(), hosts: Vec::new(), dir };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{id}-h{i}");
            let addr = Ipv4Addr::new(10, 77, 0, i as u8);
            let node = format!("h{i}");
            let home = lan.dir.path().join(&node);
            std::fs::create_dir_all(&home).expect("host home");
            lan.hosts.push(Host {
                ns: ns.clone(),
                ip: addr,
                ip6: format!("fd77::{i:x}"),
                node,
                home,
                top: format!("{id}-h{i}"),
                daemon: None,
                url: None,
            });
            ip(&["netns", "add", &ns]);
            let port = format!("v{i}");
            ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &hub]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &port, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            // No duplicate address detection: the address is usable at once.
            ip(&["-n", &ns, "addr", "add", &format!("fd77::{i:x}/64"), "dev", "eth0", "nodad"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        }
        lan
    }

    /// A command run in host `i`'s namespace (1-based), with `A2A_HOME` set to its home.
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let h = &self.hosts[i - 1];
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", h.ns)).arg("--").arg(program).env("A2A_HOME", &h.home);
        cmd
    }

    /// Starts `a2a serve --listen ADDR --node-name hI` in host `i` (with `extra` flags) and
    /// waits for its first line; answers the URL it printed.
    pub fn start(&mut self, i: usize, extra: &[&str]) -> String {
        let listen = self.hosts[i - 1].ip.to_string();
        self.start_on(i, &listen, extra)
    }

    /// As [`Lan::start`], listening on `listen` instead of the host's address.
    pub fn start_on(&mut self, i: usize, listen: &str, extra: &[&str]) -> String {
        let h = &self.hosts[i - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("h{i}.log")))
            .expect("daemon log");
        let mut child = self
            .command(i, Path::new(env!("CARGO_BIN_EXE_a2a")))
            .args(["serve", "--port", "0", "--allow-unenforced", "--listen", listen])
            .args(["--node-name", &h.node, "--cgroup-top", &h.top, "--home"])
            .arg(&h.home)
            .args(extra)
            .env("RUST_LOG", "info,a2a::discovery=debug")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn a2a serve");
        let mut line = String::new();
        let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let h = &mut self.hosts[i - 1];
        h.daemon = Some(child);
        assert!(
            line.starts_with("a2a serve: listening on https://"),
            "host {i} did not start: {line:?}\n{}",
            self.log(i)
        );
        let url = line.split_whitespace().nth(4).unwrap_or_default().to_string();
        self.hosts[i - 1].url = Some(url.clone());
        url
    }

    /// Stops host `i`'s daemon with SIGTERM (a clean stop: goodbye packets) and waits for it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i - 1].daemon.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills host `i`'s daemon outright (no goodbye).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i - 1].daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `a2a ARGS` in host `i` against its daemon.
    pub fn a2a(&self, i: usize, args: &[&str]) -> Output {
        self.command(i, Path::new(env!("CARGO_BIN_EXE_a2a"))).args(args).output().expect("run a2a")
    }

    /// Host `i`'s daemon log (stderr).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("h{i}.log"))).unwrap_or_default()
    }

    /// Every daemon log, for a failure message.
    pub fn logs(&self) -> String {
        (1..=self.hosts.len()).map(|i| format!("--- h{i}\n{}", self.log(i))).collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.daemon.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Everything still running in a namespace: agents the daemons started, CLIs.
        for ns in self.hosts.iter().map(|h| h.ns.clone()).chain([self.hub.clone()]) {
            for _ in 0..3 {
                let pids = pids_in(&ns);
                if pids.is_empty() {
                    break;
                }
                for p in pids {
                    let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let state = std::path::Path::new(a2a::node::sandbox::DEFAULT_STATE_DIR);
        for h in &self.hosts {
            remove_cgroup_tree(&h.top);
            // The secret files' tmpfs of the replicas the killed daemons left.
            a2a::node::secret_files::SecretFileStore::new(state, &h.home).sweep(&Default::default());
        }
        for ns in self.hosts.iter().map(|h| h.ns.clone()).chain([self.hub.clone()]) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        }
    }
}

/// Removes a daemon's cgroup top (its agents are dead by now).
fn remove_cgroup_tree(top: &str) {
    use a2a::node::cgroup::{self, CgroupPath};
    if let (Ok(driver), Ok(top)) = (cgroup::detect(Path::new("/sys/fs/cgroup")), CgroupPath::parse(top)) {
        let _ = driver.remove(&top, Duration::from_secs(5));
    }
}
