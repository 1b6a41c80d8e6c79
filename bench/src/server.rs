//! The servers under test, each a separate process on loopback, and what
//! the harness reads about them and about the machine.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// A server process, killed on drop.
pub struct ServerProcess {
    /// "rpcguard" or "baseline".
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The binary it runs.
    pub program: PathBuf,
    child: Child,
    data_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its data dir (rpcguard's temporary SQLite dir), if it has one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The resident set size now, KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// Stops the process (SIGKILL) and reaps it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a server logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logging {
    /// `RUST_LOG=warn`, to a pipe the harness drains and shows.
    Quiet,
    /// The default level (`info`: one line per call), to a file in the
    /// server's data dir, as an operator would run it (`2> rpcguard.log`).
    DefaultToFile,
}

/// Starts `rpcguard serve` on a free loopback port, on a fresh temporary
/// SQLite data dir, with sign-in and sign-up throttling disabled.
pub fn start_rpcguard(
    bin: &Path,
    bcrypt_cost: u32,
    extra: &[String],
    logging: Logging,
) -> anyhow::Result<ServerProcess> {
    let dir = tempfile::Builder::new()
        .prefix("rpcguard-bench-")
        .tempdir()?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--bcrypt-cost", &bcrypt_cost.to_string()])
        .args([
            "--signin-per-account-ip",
            "0",
            "--signin-per-ip",
            "0",
            "--signin-per-account",
            "0",
            "--signup-per-ip",
            "0",
        ])
        // Every load connection comes from 127.0.0.1.
        .args([
            "--max-connections",
            "20000",
            "--max-connections-per-ip",
            "0",
        ])
        .args(["--token-ttl", "3600"])
        .args(extra);
    match logging {
        Logging::Quiet => start("rpcguard", cmd, "rpcguard listening on http://", Some(dir)),
        Logging::DefaultToFile => start_logging_to_file(cmd, dir),
    }
}

/// Starts rpcguard at the default log level with its standard error going
/// to `serve.log` in its data dir; its address is read from that file.
fn start_logging_to_file(
    mut cmd: Command,
    dir: tempfile::TempDir,
) -> anyhow::Result<ServerProcess> {
    const READY: &str = "rpcguard listening on http://";
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path)?;
    cmd.env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start rpcguard ({cmd:?})"))?;
    let started = std::time::Instant::now();
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(rest) = text.lines().find_map(|l| l.strip_prefix(READY)) {
            break rest.trim_end_matches('/').to_owned();
        }
        // With --log-format json: the "rpcguard listening" object's addr.
        if let Some(addr) = text.lines().find_map(json_listening_addr) {
            break addr;
        }
        if started.elapsed() > Duration::from_secs(60) || child.try_wait()?.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("rpcguard (logging to a file) did not print its address: {text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(ServerProcess {
        name: "rpcguard",
        addr: addr
            .parse()
            .with_context(|| format!("rpcguard printed a bad address {addr:?}"))?,
        program: PathBuf::from(cmd.get_program()),
        child,
        data_dir: Some(dir),
    })
}

/// The `addr` of a JSON log line saying "rpcguard listening".
fn json_listening_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    (value["message"] == "rpcguard listening")
        .then(|| value["addr"].as_str().map(str::to_owned))
        .flatten()
}

/// Starts the bare jsonrpsee baseline on a free loopback port.
pub fn start_baseline(bin: &Path) -> anyhow::Result<ServerProcess> {
    let mut cmd = Command::new(bin);
    cmd.args(["127.0.0.1:0", "20000"]);
    start("baseline", cmd, "baseline listening on http://", None)
}

fn start(
    name: &'static str,
    mut cmd: Command,
    ready_prefix: &'static str,
    data_dir: Option<tempfile::TempDir>,
) -> anyhow::Result<ServerProcess> {
    let program = PathBuf::from(cmd.get_program());
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{name}: no standard error to read its address from");
    };
    let (tx, rx) = mpsc::channel();
    // Reads the ready line, then keeps draining (and showing) the log.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(ready_prefix) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.trim_end_matches('/').to_owned());
                }
            } else {
                eprintln!("  [{name}] {line}");
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => addr
            .parse()
            .with_context(|| format!("{name} printed a bad address {addr:?}"))?,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("{name} did not print its address (exit status {status})");
        }
    };
    Ok(ServerProcess {
        name,
        addr,
        program,
        child,
        data_dir,
    })
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// Raises this process's open-file soft limit to its hard limit (children
/// inherit it); returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// The binaries next to this one: `target/<profile>/rpcguard` and
/// `target/<profile>/baseline`.
pub fn default_binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .ok_or_else(|| anyhow!("no parent of {exe:?}"))?;
    Ok((profile.join("rpcguard"), profile.join("baseline")))
}

/// Machine description for the report.
pub struct Machine {
    /// Cores this process may use (`nproc`).
    pub cores: usize,
    /// The CPU's model name, or "unknown".
    pub model: String,
    /// Total memory, e.g. "23.5 GiB", or "unknown".
    pub mem_total: String,
    /// The kernel release (empty when unreadable).
    pub kernel: String,
}

impl Machine {
    /// Reads the machine from `/proc`; what cannot be read is "unknown".
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            model,
            mem_total,
            kernel,
        }
    }
}

/// `git rev-parse --short HEAD`, with " (+ uncommitted changes)" when the
/// work tree differs from it in what the servers are built from.
pub fn git_commit() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let commit = Command::new("git")
        .args(["-C", root, "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let dirty = Command::new("git")
        .args([
            "-C",
            root,
            "diff",
            "--quiet",
            "HEAD",
            "--",
            "src",
            "crates",
            "bench/src",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .status()
        .map(|s| !s.success())
        .unwrap_or(false);
    if dirty {
        format!("{commit} (+ uncommitted changes)")
    } else {
        commit
    }
}

/// CPU time of a process (all its threads), clock ticks.
fn proc_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces): state is
    // field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Busy clock ticks of the whole machine (all cores), from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// Where the CPU went during a measured window, in cores (1.0 = one core
/// busy the whole window).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// The server under test.
    pub server: f64,
    /// This process (the load generator).
    pub client: f64,
    /// Every other process on the machine (noise).
    pub other: f64,
}

/// A reading to subtract from a later one.
pub struct CpuMeter {
    at: std::time::Instant,
    busy: u64,
    server_pid: u32,
    server: u64,
    client: u64,
    others: Vec<(u32, u64)>,
}

impl CpuMeter {
    /// Starts measuring; `also_ours` are the other processes of the bench
    /// (the other server), which count neither as server nor as noise.
    pub fn start(server_pid: u32, also_ours: &[u32]) -> CpuMeter {
        CpuMeter {
            at: std::time::Instant::now(),
            busy: machine_busy_ticks(),
            server_pid,
            server: proc_ticks(server_pid),
            client: proc_ticks(std::process::id()),
            others: also_ours.iter().map(|&p| (p, proc_ticks(p))).collect(),
        }
    }

    /// The CPU used since `start`.
    pub fn stop(&self) -> CpuUse {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let server = proc_ticks(self.server_pid).saturating_sub(self.server);
        let client = proc_ticks(std::process::id()).saturating_sub(self.client);
        let ours: u64 = self
            .others
            .iter()
            .map(|&(p, t)| proc_ticks(p).saturating_sub(t))
            .sum();
        let busy = machine_busy_ticks().saturating_sub(self.busy);
        let other = busy.saturating_sub(server + client + ours);
        let cores = |ticks: u64| ticks as f64 / hz / secs;
        CpuUse {
            server: cores(server),
            client: cores(client),
            other: cores(other),
        }
    }
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
