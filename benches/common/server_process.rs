//! A `lote server` in a process of its own, so its CPU is told apart from
//! the benchmark's (which plays agents and clients).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct ServerProcess {
    pub addr: String,
    pub admin_key: String,
    pub data_dir: std::path::PathBuf,
    child: Child,
}

impl ServerProcess {
    /// Starts the `lote` binary on `data_dir` with `extra` flags; returns
    /// once it prints where it listens.
    pub fn start(data_dir: &std::path::Path, extra: &[&str]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lote"));
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // kill the server if this process dies first (a failed bench).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "human"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("lote server starts");
        let mut lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("lote server printed where it listens before exiting")
                .expect("its stdout reads");
            if let Some(addr) = line.strip_prefix("lote server listening on ") {
                break addr.trim().to_string();
            }
        };
        // Keep draining what it prints so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let admin_key = std::fs::read_to_string(data_dir.join("admin.key"))
            .expect("the admin key")
            .trim()
            .to_string();
        ServerProcess {
            addr,
            admin_key,
            data_dir: data_dir.to_path_buf(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// Its resident memory, bytes.
    pub fn resident_bytes(&self) -> u64 {
        resident_of(&format!("/proc/{}/status", self.pid()))
    }

    /// SIGTERM, then waits for it to drain and exit.
    pub fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of a process or thread, from its `stat` file.
pub fn cpu_secs_of(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Resident memory from a `status` file, bytes.
pub fn resident_of(status_path: &str) -> u64 {
    let status = std::fs::read_to_string(status_path).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}
