//! What a node's agent reports of its machine for autoscale formulas
//! (`$CPUPercent`, `$MemoryBytes`, `$DiskBytes`, disk and network
//! counters), read from /proc and statvfs. Counters are sent as the change
//! since the previous report, so the server only adds them up.

use std::path::Path;

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    cpu_total: u64,
    cpu_idle: u64,
    disk: [u64; 4],
    net: [u64; 2],
}
use crate::api::agent::NodeUsage;

/// Reads the machine's figures; keeps the last counters for deltas.
#[derive(Debug, Default)]
pub struct UsageProbe {
    last: Option<Counters>,
}

fn cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total, idle)
}

fn memory_used() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    field("MemTotal:").saturating_sub(field("MemAvailable:"))
}

fn disk_used(root: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a
    // valid NUL-terminated string for the call's duration.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    (st.f_blocks.saturating_sub(st.f_bfree) as u64).saturating_mul(st.f_frsize as u64)
}

/// Reads, writes (sectors as bytes) and their counts over whole disks
/// (partitions would count twice; loop and ram devices are not disks).
fn disk_io() -> [u64; 4] {
    let text = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    let mut out = [0u64; 4];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        let whole = Path::new("/sys/block").join(name).exists();
        if !whole || name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        out[0] += n(5) * 512;
        out[1] += n(9) * 512;
        out[2] += n(3);
        out[3] += n(7);
    }
    out
}

fn network() -> [u64; 2] {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let mut out = [0u64; 2];
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        out[0] += v.first().copied().unwrap_or(0);
        out[1] += v.get(8).copied().unwrap_or(0);
    }
    out
}

impl UsageProbe {
    /// The figures now; counters are the change since the previous call
    /// (zero on the first).
    pub fn sample(&mut self, root: &Path) -> NodeUsage {
        let (cpu_total, cpu_idle) = cpu();
        let now = Counters {
            cpu_total,
            cpu_idle,
            disk: disk_io(),
            net: network(),
        };
        let prev = self.last.replace(now).unwrap_or(now);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let total = d(now.cpu_total, prev.cpu_total);
        let busy = total.saturating_sub(d(now.cpu_idle, prev.cpu_idle));
        NodeUsage {
            cpu_percent: if total == 0 {
                0.0
            } else {
                100.0 * busy as f64 / total as f64
            },
            memory_bytes: memory_used(),
            disk_bytes: disk_used(root),
            disk_read_bytes: d(now.disk[0], prev.disk[0]),
            disk_write_bytes: d(now.disk[1], prev.disk[1]),
            disk_read_ops: d(now.disk[2], prev.disk[2]),
            disk_write_ops: d(now.disk[3], prev.disk[3]),
            network_in_bytes: d(now.net[0], prev.net[0]),
            network_out_bytes: d(now.net[1], prev.net[1]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reports_real_figures() {
        let mut probe = UsageProbe::default();
        let first = probe.sample(Path::new("/"));
        assert!(first.memory_bytes > 0, "{first:?}");
        assert!(first.disk_bytes > 0, "{first:?}");
        // Burn some CPU so the interval has work in it.
        let mut x = 0u64;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let second = probe.sample(Path::new("/"));
        assert!(
            second.cpu_percent > 0.0 && second.cpu_percent <= 100.0,
            "{second:?}"
        );
    }
}
