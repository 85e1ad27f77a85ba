//! Blob transfers over loopback against a plain `cp` of the same file on
//! the same disk, in the same run: upload and download throughput of a
//! 1 GiB blob (SHA-256 checked end to end, the upload fsynced before it is
//! visible), and the peak resident memory of the process holding both the
//! server and the client.
//!
//!   cargo bench --bench files
//!   cargo bench --bench files -- --mib 1024 --dir /var/tmp
//!
//! Without `--bench` it is a quick smoke run of itself (16 MiB).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use common::{arg, smoke};
use lote::api::{Credential, Request};
use lote::blob::transfer;
use lote::client::{Client, ClientConfig};
use lote::server::{self, ServerConfig};
use lote::types::AccountName;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak-RSS counter, so VmHWM shows this phase's peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn write_random(path: &Path, mib: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn main() {
    let smoke = smoke();
    let mib = arg("--mib", if smoke { 16 } else { 1024 });
    let scratch = common::scratch_dir();
    let src = scratch.path().join("blob.bin");
    write_random(&src, mib);
    let bytes = mib << 20;
    let rate = |secs: f64| bytes as f64 / secs / 1048576.0;

    // The baseline: cp on the same disk, the source in the page cache as it
    // is for lote's upload right after.
    let copy = scratch.path().join("copy.bin");
    let started = Instant::now();
    let status = std::process::Command::new("cp")
        .arg(&src)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let cp_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let status = std::process::Command::new("sync").status().unwrap();
    assert!(status.success());
    let sync_secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&copy).unwrap();

    let data = scratch.path().join("server");
    let server = server::Embedded::start(ServerConfig::new(&data, "127.0.0.1:0")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr.to_string();
    let (up_secs, down_secs, up_peak, down_peak, before) = runtime.block_on(async {
        let account = AccountName::new("bench").unwrap();
        let key = common::new_account(&addr, &server.admin_key, &account).await;
        let client = Client::new(ClientConfig::new(
            addr.clone(),
            Credential::Account { account },
            key,
        ));
        let before = status_kib("VmRSS:");
        reset_peak();
        let started = Instant::now();
        let meta = transfer::upload_file(
            &client,
            Request::BeginUpload {
                container: "bench".into(),
                name: "blob.bin".into(),
            },
            &src,
            |_, _| {},
        )
        .await
        .unwrap();
        let up_secs = started.elapsed().as_secs_f64();
        let up_peak = status_kib("VmHWM:");
        assert_eq!(meta.size, bytes);
        let back = scratch.path().join("back.bin");
        reset_peak();
        let started = Instant::now();
        transfer::download_to(&client, &meta, &back, |_, _| {})
            .await
            .unwrap();
        let down_secs = started.elapsed().as_secs_f64();
        let down_peak = status_kib("VmHWM:");
        assert_eq!(std::fs::metadata(&back).unwrap().len(), bytes);
        (up_secs, down_secs, up_peak, down_peak, before)
    });
    server.stop().unwrap();

    let cp = rate(cp_secs);
    println!("blob transfers of {mib} MiB over loopback (server and client in this process)");
    println!(
        "  cp:        {cp:8.1} MiB/s ({cp_secs:.2}s; a sync after it took {sync_secs:.2}s more)"
    );
    println!(
        "  upload:    {:8.1} MiB/s ({up_secs:.2}s) = {:.0}% of cp, fsynced before visible",
        rate(up_secs),
        100.0 * rate(up_secs) / cp
    );
    println!(
        "  download:  {:8.1} MiB/s ({down_secs:.2}s) = {:.0}% of cp",
        rate(down_secs),
        100.0 * rate(down_secs) / cp
    );
    println!(
        "  resident memory: {} MiB before; peak {} MiB during the upload, {} MiB during the download",
        before / 1024,
        up_peak / 1024,
        down_peak / 1024
    );
}
