//! What the agent reads of other processes in /proc.

/// Field 3 of `/proc/PID/stat` (`R`, `S`, `Z`, ...); None when it is gone.
pub(super) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Whether a process is alive: not gone, not a zombie waiting to be
/// reaped.
pub(super) fn alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(state) if state != 'Z' && state != 'X')
}
