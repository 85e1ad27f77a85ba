//! Files end to end, with the real server, agents and CLI: the blob store
//! (200 MiB round trip with checksum and bounded memory, interrupted and
//! corrupted uploads), resource files fetched and cached per node, output
//! files uploaded per condition with manifests, a failed upload reported as
//! such, the files API refusing a traversal corpus and planted symlinks,
//! and application packages (zip-slip and links refused, versions and
//! default resolution).

mod compute_support;
mod server_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use compute_support::*;
use lote::api::{FileAnswer, FileKind, Request, Response};
use lote::blob::transfer;
use lote::client::Client;
use lote::domain::job::JobSpec;
use lote::domain::pool::PoolSpec;
use lote::domain::spec::{OutputFile, PackageRef, ResourceFile, ResourceSource, UploadCondition};
use lote::domain::task::{FailureCategory, TaskStatus};
use lote::domain::RejectionCode;
use lote::types::{AccountName, JobId, PoolId, TaskId};
use server_support::*;
use sha2::{Digest, Sha256};

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    lote::blob::hex(&h.finalize())
}

/// Writes `bytes` of deterministic pseudo-random data.
fn random_file(path: &Path, bytes: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = seed | 1;
    let mut left = bytes;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

/// Peak resident memory of a finished child, in KiB (from wait4).
fn run_measured(mut cmd: Command) -> (std::process::ExitStatus, u64, String) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let out = std::thread::spawn(move || {
        let mut child = child;
        let mut text = String::new();
        use std::io::Read;
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut text).unwrap();
        }
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut text).unwrap();
        }
        // The child is reaped by wait4 below.
        std::mem::forget(child);
        text
    });
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    let text = out.join().unwrap();
    use std::os::unix::process::ExitStatusExt;
    (
        std::process::ExitStatus::from_raw(status),
        usage.ru_maxrss as u64,
        text,
    )
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_blob_round_trips_with_its_checksum_in_bounded_memory() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let work = open_tempdir();
    let src = work.path().join("big.bin");
    const SIZE: usize = 200 << 20;
    random_file(&src, SIZE, 7);
    let want = sha256_file(&src);
    let server_before = status_kib(server.pid(), "VmRSS:");
    // What the CLI takes doing next to nothing (its code, its runtime),
    // measured the same way: the bounds below are over that, so they
    // measure the transfer, not the size of the binary.
    let (status, baseline_kib, text) =
        run_measured(cli_command(&server, &key, &["blob", "list", "inputs"]));
    assert!(status.success(), "{text}");

    let (status, upload_kib, text) = run_measured({
        let mut c = cli_command(&server, &key, &["blob", "upload", "inputs"]);
        c.arg(&src).args(["--name", "data/big.bin"]);
        c
    });
    assert!(status.success(), "{text}");
    let meta = transfer::stat(&client, "inputs", "data/big.bin")
        .await
        .unwrap();
    assert_eq!(
        (meta.size, meta.sha256.as_str()),
        (SIZE as u64, want.as_str())
    );

    let dest = work.path().join("back.bin");
    let (status, download_kib, text) = run_measured({
        let mut c = cli_command(
            &server,
            &key,
            &["blob", "download", "inputs", "data/big.bin", "--dest"],
        );
        c.arg(&dest);
        c
    });
    assert!(status.success(), "{text}");
    assert_eq!(sha256_file(&dest), want);
    // No partial file is left beside the download.
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("lote-part"))
        .collect();
    assert!(leftovers.is_empty());

    // Memory: a few chunks in flight, never the file (200 MiB).
    let server_peak = status_kib(server.pid(), "VmHWM:");
    eprintln!(
        "peak RSS: a CLI listing {baseline_kib} KiB, upload CLI {upload_kib} KiB, download CLI {download_kib} KiB, server {server_before} KiB before, {server_peak} KiB peak"
    );
    assert!(
        upload_kib < baseline_kib + 32 * 1024,
        "upload CLI peaked at {upload_kib} KiB ({baseline_kib} KiB listing)"
    );
    assert!(
        download_kib < baseline_kib + 32 * 1024,
        "download CLI peaked at {download_kib} KiB ({baseline_kib} KiB listing)"
    );
    assert!(
        server_peak < server_before + 96 * 1024,
        "server grew from {server_before} to {server_peak} KiB"
    );
    stop_and_replay(server);
}

#[tokio::test]
async fn interrupted_and_corrupted_uploads_leave_nothing_visible() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    // Interrupted: a chunk, then the connection is gone.
    {
        let gone = server.client(
            lote::api::Credential::Account {
                account: AccountName::new("acme").unwrap(),
            },
            &key,
        );
        let Response::UploadStarted { upload } = gone
            .call(&Request::BeginUpload {
                container: "inputs".into(),
                name: "half.bin".into(),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        gone.call(&Request::UploadChunk {
            upload,
            offset: 0,
            data: vec![1; 1000],
        })
        .await
        .unwrap();
        drop(gone);
    }
    let shown = client
        .call(&Request::ShowBlob {
            container: "inputs".into(),
            name: "half.bin".into(),
        })
        .await;
    assert_eq!(rejection(shown), Some(RejectionCode::BlobNotFound));
    // Corrupted: the bytes that arrived are not what the uploader hashed.
    // (A chunk's bytes travel outside its call's signature, so this check
    // is what stops bytes changed in transit.)
    let Response::UploadStarted { upload } = client
        .call(&Request::BeginUpload {
            container: "inputs".into(),
            name: "bad.bin".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    client
        .call(&Request::UploadChunk {
            upload,
            offset: 0,
            data: b"what arrived".to_vec(),
        })
        .await
        .unwrap();
    let finished = client
        .call(&Request::FinishUpload {
            upload,
            size: 12,
            sha256: lote::blob::hex(&Sha256::digest(b"what was sent")),
        })
        .await;
    assert_eq!(rejection(finished), Some(RejectionCode::ChecksumMismatch));
    // A chunk for an upload that is over, or that never was.
    let late = client
        .call(&Request::UploadChunk {
            upload,
            offset: 12,
            data: vec![0],
        })
        .await;
    assert_eq!(rejection(late), Some(RejectionCode::UploadNotFound));
    let Response::Blobs { blobs, .. } = client
        .call(&Request::ListBlobs {
            container: "inputs".into(),
            prefix: String::new(),
            after: None,
            limit: 100,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(blobs.is_empty(), "{blobs:?}");
    // Names that would escape when downloaded are refused outright.
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b"] {
        let r = client
            .call(&Request::BeginUpload {
                container: "inputs".into(),
                name: bad.into(),
            })
            .await;
        assert_eq!(rejection(r), Some(RejectionCode::InvalidValue), "{bad}");
    }
    // Lote's own container cannot be written directly.
    let r = client
        .call(&Request::BeginUpload {
            container: "lote-apps".into(),
            name: "x/1.zip".into(),
        })
        .await;
    assert_eq!(rejection(r), Some(RejectionCode::InvalidValue));
    stop_and_replay(server);
}

async fn put(client: &Client, container: &str, name: &str, path: &Path) {
    transfer::upload_file(
        client,
        Request::BeginUpload {
            container: container.into(),
            name: name.into(),
        },
        path,
        |_, _| {},
    )
    .await
    .unwrap();
}

fn blob_input(container: &str, name: &str, path: &str) -> ResourceFile {
    ResourceFile {
        source: ResourceSource::Blob {
            container: container.into(),
            name: name.into(),
        },
        path: path.into(),
        mode: None,
    }
}

fn output(pattern: &str, prefix: &str, when: UploadCondition) -> OutputFile {
    OutputFile {
        pattern: pattern.into(),
        container: "results".into(),
        path_prefix: prefix.into(),
        upload_condition: when,
    }
}

fn node_dir(server: &ServerProcess, pool: &str, node: &str) -> PathBuf {
    server
        .data_dir
        .join("nodes")
        .join("acme")
        .join(pool)
        .join(node)
}

/// Serves one file over HTTP on loopback, for URL resource files.
fn http_server(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let reply = if request.starts_with("GET /tool.sh ") {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = s.write_all(&reply);
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_fetched_once_per_node_and_outputs_uploaded_per_condition() {
    let server = ServerProcess::start(&[]);
    let (client, _key, _) = server.account("acme").await;
    let work = open_tempdir();
    let shared = work.path().join("shared.bin");
    random_file(&shared, 3 << 20, 11);
    let shared_sha = sha256_file(&shared);
    put(&client, "inputs", "shared.bin", &shared).await;
    for (name, text) in [("set/a.txt", "alpha"), ("set/sub/b.txt", "beta")] {
        let p = work.path().join("f");
        std::fs::write(&p, text).unwrap();
        put(&client, "inputs", name, &p).await;
    }
    let script = work.path().join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nsha256sum \"$1\" | cut -d' ' -f1\n").unwrap();
    put(&client, "programs", "check.sh", &script).await;
    let base = http_server(b"#!/bin/sh\necho from-url\n".to_vec());

    local_pool(&client, "files", 1, 2).await;
    let node = nodes_up(&client, "files", 1).await[0]
        .state
        .id
        .clone()
        .unwrap()
        .to_string();
    let job = JobSpec {
        common_resource_files: vec![ResourceFile {
            mode: Some(0o755),
            ..blob_input("programs", "check.sh", "bin/check.sh")
        }],
        ..JobSpec::on_pool(
            JobId::new("io").unwrap(),
            AccountName::new("x").unwrap(),
            PoolId::new("files").unwrap(),
        )
    };
    create_job_spec(&client, job).await;

    // Six tasks share one 3 MiB input; each also takes a prefix of blobs
    // and a file from a URL.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let conditions = [
            output("out/*.txt", "ok/", UploadCondition::Success),
            output("out/*.txt", "bad/", UploadCondition::Failure),
            output(
                "../stdout.txt",
                &format!("logs/t{i}/"),
                UploadCondition::Completion,
            ),
        ];
        let fail = i == 5;
        let line = format!(
            "mkdir -p out && bin/check.sh shared.bin > out/digest-{i}.txt && cat set/a.txt set/sub/b.txt > out/set-{i}.txt && sh url/tool.sh && {}",
            if fail { "exit 4" } else { "true" }
        );
        let mut t = shell(&format!("t{i}"), &line);
        t.resource_files = vec![
            blob_input("inputs", "shared.bin", "shared.bin"),
            ResourceFile {
                source: ResourceSource::BlobPrefix {
                    container: "inputs".into(),
                    prefix: "set/".into(),
                },
                path: "set".into(),
                mode: None,
            },
            ResourceFile {
                source: ResourceSource::Url {
                    url: format!("{base}/tool.sh"),
                },
                path: "url/tool.sh".into(),
                mode: None,
            },
        ];
        t.output_files = conditions.to_vec();
        tasks.push(t);
    }
    add(&client, "io", tasks.drain(..2).collect()).await;
    wait_job(&client, "io", Duration::from_secs(60)).await;
    let cached = node_dir(&server, "files", &node)
        .join("cache/blobs")
        .join(&shared_sha);
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&cached)
        .expect("the shared input is cached")
        .ino();
    add(&client, "io", tasks).await;
    wait_job(&client, "io", Duration::from_secs(60)).await;
    // Fetched once: the cached copy is the same file (a fetch writes a new
    // file and renames it over).
    assert_eq!(std::fs::metadata(&cached).unwrap().ino(), inode);
    let cache_files = std::fs::read_dir(cached.parent().unwrap()).unwrap().count();
    assert_eq!(cache_files, 4, "one cached copy per distinct blob");

    for i in 0..6 {
        let t = task(&client, "io", &format!("t{i}")).await.state;
        assert_eq!(t.status, TaskStatus::Completed);
        let result = t.last_result.clone().unwrap();
        let names: Vec<&str> = t.outputs.iter().map(|o| o.name.as_str()).collect();
        if i == 5 {
            assert_eq!(
                result.failure.as_ref().unwrap().0,
                FailureCategory::NonZeroExit
            );
            assert_eq!(
                names,
                [
                    format!("bad/digest-{i}.txt"),
                    format!("bad/set-{i}.txt"),
                    format!("logs/t{i}/stdout.txt")
                ]
            );
        } else {
            assert!(result.succeeded(), "{result:?}");
            assert_eq!(
                names,
                [
                    format!("ok/digest-{i}.txt"),
                    format!("ok/set-{i}.txt"),
                    format!("logs/t{i}/stdout.txt")
                ]
            );
        }
        // The manifest is what the store holds, and the content is right.
        for o in &t.outputs {
            let meta = transfer::stat(&client, &o.container, &o.name)
                .await
                .unwrap();
            assert_eq!((meta.size, &meta.sha256), (o.size, &o.sha256), "{o:?}");
        }
        let digest = t
            .outputs
            .iter()
            .find(|o| o.path.starts_with("out/digest"))
            .unwrap();
        let back = work.path().join(format!("digest-{i}"));
        let meta = transfer::stat(&client, "results", &digest.name)
            .await
            .unwrap();
        transfer::download_to(&client, &meta, &back, |_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&back).unwrap().trim(), shared_sha);
        let set = t
            .outputs
            .iter()
            .find(|o| o.path.starts_with("out/set"))
            .unwrap();
        let meta = transfer::stat(&client, "results", &set.name).await.unwrap();
        transfer::download_to(&client, &meta, &back, |_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "alphabeta");
        let log = t
            .outputs
            .iter()
            .find(|o| o.path == "../stdout.txt")
            .unwrap();
        let meta = transfer::stat(&client, "results", &log.name).await.unwrap();
        transfer::download_to(&client, &meta, &back, |_, _| {})
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "from-url\n");
    }
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_inputs_and_uploads_fail_the_attempt_with_their_own_category() {
    let server = ServerProcess::start(&[]);
    let (client, _key, _) = server.account("acme").await;
    let env = Env::new(&client);
    env.pool("files").nodes(1).slots(2).without_waiting().await;
    env.job("io").on("files").await;
    let mut missing = shell("missing-input", "true");
    missing.resource_files = vec![blob_input("inputs", "nope.bin", "nope.bin")];
    let mut bad_url = shell("bad-url", "true");
    bad_url.resource_files = vec![ResourceFile {
        source: ResourceSource::Url {
            url: "http://127.0.0.1:9/none".into(),
        },
        path: "x".into(),
        mode: None,
    }];
    // A name past the store's 1024-byte limit: the upload is refused.
    let mut upload = shell("bad-upload", "echo hi > out.txt");
    upload.output_files = vec![OutputFile {
        pattern: "*.txt".into(),
        container: "results".into(),
        path_prefix: format!("{}/", "p".repeat(1020)),
        upload_condition: UploadCondition::Success,
    }];
    add(&client, "io", vec![missing, bad_url, upload]).await;
    wait_job(&client, "io", Duration::from_secs(60)).await;
    for (id, category, words) in [
        ("missing-input", FailureCategory::ResourceFile, "nope.bin"),
        (
            "bad-url",
            FailureCategory::ResourceFile,
            "http://127.0.0.1:9/none",
        ),
        (
            "bad-upload",
            FailureCategory::OutputFile,
            "output file out.txt",
        ),
    ] {
        let t = task(&client, "io", id).await.state;
        let (got, why) = t.last_result.unwrap().failure.unwrap();
        assert_eq!(got, category, "{id}: {why}");
        assert!(why.contains(words), "{id}: {why}");
        assert_eq!(t.attempt, 1, "{id}");
    }
    stop_and_replay(server);
}

async fn files(client: &Client, request: Request) -> Result<FileAnswer, RejectionCode> {
    match client.call(&request).await {
        Ok(Response::Files { answer, .. }) => Ok(answer),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.api().and_then(|a| a.rejection).expect("a rejection")),
    }
}

fn read_task(path: &str) -> Request {
    Request::ReadTaskFile {
        job: JobId::new("io").unwrap(),
        task: TaskId::new("planter").unwrap(),
        attempt: 0,
        path: path.into(),
        offset: 0,
        max_bytes: 1 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_api_refuses_traversal_and_planted_symlinks() {
    let server = ServerProcess::start(&[]);
    let (client, _key, _) = server.account("acme").await;
    local_pool(&client, "files", 1, 2).await;
    let node = nodes_up(&client, "files", 1).await[0]
        .state
        .id
        .clone()
        .unwrap();
    create_job(&client, "io", "files").await;
    let planter = shell(
        "planter",
        "echo hello > ok.txt; mkdir -p sub; echo deep > sub/d.txt; ln -s /etc evil; ln -s /etc/passwd passwd; ln -s ../../../../.. up; ln -s ../stdout.txt mine; echo started; sleep 30",
    );
    add(&client, "io", vec![planter]).await;
    eventually(Duration::from_secs(30), "planter running", || async {
        match files(&client, read_task("stdout.txt")).await {
            Ok(FileAnswer::Chunk(c)) if c.data == b"started\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let Ok(FileAnswer::Chunk(c)) = files(&client, read_task("wd/ok.txt")).await else {
        panic!("wd/ok.txt is readable while the task runs")
    };
    assert_eq!(c.data, b"hello\n");
    let corpus = [
        "../x",
        "../../node.toml",
        "/etc/passwd",
        "wd/../../../../etc/passwd",
        "wd/../../../node.toml",
        "wd/evil/passwd",
        "wd/evil",
        "wd/passwd",
        "wd/up/node.toml",
        "wd/up",
        "wd/\0x",
        "wd/./../..",
        "//etc/passwd",
        "nothing-here",
    ];
    for path in corpus {
        let got = files(&client, read_task(path)).await;
        assert_eq!(
            got,
            Err(RejectionCode::FileNotFound),
            "{path:?} gave {got:?}"
        );
    }
    // Listing does not follow links either.
    for path in ["wd/evil", "wd/up", "../"] {
        let got = files(
            &client,
            Request::ListTaskFiles {
                job: JobId::new("io").unwrap(),
                task: TaskId::new("planter").unwrap(),
                attempt: 0,
                path: path.into(),
                recursive: true,
            },
        )
        .await;
        assert_eq!(got, Err(RejectionCode::FileNotFound), "list {path:?}");
    }
    // What is inside works, also while the task runs; a link that stays
    // inside is followed.
    let Ok(FileAnswer::Chunk(c)) = files(&client, read_task("wd/mine")).await else {
        panic!("a link inside the attempt's directory is readable")
    };
    assert_eq!(c.data, b"started\n");
    let Ok(FileAnswer::Listing(entries)) = files(
        &client,
        Request::ListTaskFiles {
            job: JobId::new("io").unwrap(),
            task: TaskId::new("planter").unwrap(),
            attempt: 0,
            path: String::new(),
            recursive: true,
        },
    )
    .await
    else {
        panic!()
    };
    let kinds: Vec<(&str, FileKind)> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    for want in [
        ("stdout.txt", FileKind::File),
        ("wd/ok.txt", FileKind::File),
        ("wd/sub", FileKind::Directory),
        ("wd/sub/d.txt", FileKind::File),
        ("wd/evil", FileKind::Symlink),
        ("wd/up", FileKind::Symlink),
    ] {
        assert!(kinds.contains(&want), "{want:?} in {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|(p, _)| p.starts_with("wd/evil/")),
        "{kinds:?}"
    );
    // The node's files: its credential is not among them.
    let pool = PoolId::new("files").unwrap();
    let node_read = |path: &str| Request::ReadNodeFile {
        pool: pool.clone(),
        node: node.clone(),
        path: path.into(),
        offset: 0,
        max_bytes: 1 << 20,
    };
    for path in [
        "node.toml",
        "cache",
        "tasks/../node.toml",
        "/etc/passwd",
        "../x",
    ] {
        let got = files(&client, node_read(path)).await;
        assert_eq!(got, Err(RejectionCode::FileNotFound), "node {path:?}");
    }
    let Ok(FileAnswer::Chunk(c)) =
        files(&client, node_read("tasks/io/planter/1/wd/sub/d.txt")).await
    else {
        panic!()
    };
    assert_eq!(c.data, b"deep\n");
    let Ok(FileAnswer::Listing(top)) = files(
        &client,
        Request::ListNodeFiles {
            pool: pool.clone(),
            node: node.clone(),
            path: String::new(),
            recursive: false,
        },
    )
    .await
    else {
        panic!()
    };
    assert!(top.iter().all(|e| !e.path.contains("node.toml")), "{top:?}");
    assert!(top.iter().any(|e| e.path == "shared"), "{top:?}");

    // After its retention time the files are gone, and the API says so.
    client
        .call(&Request::TerminateTask {
            job: JobId::new("io").unwrap(),
            task: TaskId::new("planter").unwrap(),
            reason: "done".into(),
        })
        .await
        .unwrap();
    let mut short = shell("short", "echo bye > out.txt");
    short.constraints.retention_secs = Some(1);
    add(&client, "io", vec![short]).await;
    wait_job(&client, "io", Duration::from_secs(30)).await;
    let gone = eventually(Duration::from_secs(20), "retention", || async {
        match client
            .call(&Request::ReadTaskFile {
                job: JobId::new("io").unwrap(),
                task: TaskId::new("short").unwrap(),
                attempt: 0,
                path: "wd/out.txt".into(),
                offset: 0,
                max_bytes: 100,
            })
            .await
        {
            Err(e) => Ok(e.to_string()),
            Ok(_) => Err("still there".to_string()),
        }
    })
    .await;
    assert!(gone.contains("retention"), "{gone}");
    stop_and_replay(server);
}

fn zip_file(path: &Path, entries: &[(&str, &[u8], u32)], link: Option<(&str, &str)>) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = zip::ZipWriter::new(f);
    for (name, data, mode) in entries {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    if let Some((name, target)) = link {
        w.add_symlink(name, target, zip::write::SimpleFileOptions::default())
            .unwrap();
    }
    w.finish().unwrap();
}

async fn upload_package(
    client: &Client,
    id: &str,
    version: &str,
    zip: &Path,
) -> Result<(), String> {
    transfer::upload_file(
        client,
        Request::BeginPackageUpload {
            id: id.into(),
            version: version.into(),
        },
        zip,
        |_, _| {},
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_refuse_bad_archives_and_resolve_versions_and_the_default() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let work = open_tempdir();
    let z = |name: &str| work.path().join(name);
    let tool = |v: &str| format!("#!/bin/sh\necho tool {v}\n").into_bytes();
    zip_file(&z("v1.zip"), &[("bin/tool", &tool("1.0"), 0o755)], None);
    zip_file(&z("v2.zip"), &[("bin/tool", &tool("2.0"), 0o755)], None);
    zip_file(&z("slip.zip"), &[("../../evil.sh", b"x", 0o644)], None);
    zip_file(&z("abs.zip"), &[("/tmp/evil.sh", b"x", 0o644)], None);
    zip_file(
        &z("link.zip"),
        &[("ok", b"x", 0o644)],
        Some(("escape", "/etc/passwd")),
    );
    std::fs::write(z("junk.zip"), b"not a zip at all").unwrap();
    for (bad, words) in [
        ("slip.zip", "outside"),
        ("abs.zip", "outside"),
        ("link.zip", "symbolic link"),
        ("junk.zip", "zip"),
    ] {
        let err = upload_package(&client, "tool", "9.9", &z(bad))
            .await
            .unwrap_err();
        assert!(
            err.contains("refused") && err.contains(words),
            "{bad}: {err}"
        );
    }
    upload_package(&client, "tool", "1.0", &z("v1.zip"))
        .await
        .unwrap();
    // Through the CLI, made the default.
    let out = cli(
        &server,
        &key,
        &[
            "package",
            "upload",
            "tool",
            "2.0",
            z("v2.zip").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&server, &key, &["package", "set-default", "tool", "1.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&server, &key, &["--output", "json", "package", "list"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["packages"][0]["default_version"], "1.0", "{listed}");
    assert_eq!(
        listed["packages"][0]["versions"].as_array().unwrap().len(),
        2
    );

    // A pool that uses a package, and tasks that name versions or not.
    let missing_pool = PoolSpec {
        application_packages: vec![PackageRef {
            id: "nothing".into(),
            version: None,
        }],
        ..PoolSpec::fixed(
            PoolId::new("apps").unwrap(),
            AccountName::new("x").unwrap(),
            1,
            2,
        )
    };
    let r = client
        .call(&Request::CreatePool {
            spec: missing_pool,
            request_id: None,
        })
        .await;
    assert_eq!(rejection(r), Some(RejectionCode::ApplicationNotFound));
    let pool = PoolSpec {
        application_packages: vec![PackageRef {
            id: "tool".into(),
            version: Some("2.0".into()),
        }],
        start_task: Some(start_task(
            "$LOTE_APP_TOOL_2_0/bin/tool > from-start.txt",
            true,
            0,
        )),
        ..PoolSpec::fixed(
            PoolId::new("apps").unwrap(),
            AccountName::new("x").unwrap(),
            1,
            2,
        )
    };
    create_pool_spec(&client, pool).await;
    let node = nodes_up(&client, "apps", 1).await[0]
        .state
        .id
        .clone()
        .unwrap()
        .to_string();
    create_job(&client, "run", "apps").await;
    let with = |id: &str, version: Option<&str>| {
        let mut t = shell(
            id,
            "$LOTE_APP_TOOL/bin/tool; echo \"$LOTE_APP_TOOL_1_0|$LOTE_APP_TOOL_2_0\"",
        );
        t.application_packages = vec![PackageRef {
            id: "tool".into(),
            version: version.map(str::to_string),
        }];
        t
    };
    let r = client
        .call(&Request::AddTasks {
            job: JobId::new("run").unwrap(),
            tasks: vec![with("ok", None), with("three", Some("3.0"))],
            request_id: None,
        })
        .await;
    assert_eq!(rejection(r), Some(RejectionCode::ApplicationNotFound));
    add(
        &client,
        "run",
        vec![with("default", None), with("two", Some("2.0"))],
    )
    .await;
    wait_job(&client, "run", Duration::from_secs(60)).await;
    let apps = node_dir(&server, "apps", &node).join("apps/tool");
    let output = |id: &str| {
        let out = cli(&server, &key, &["task", "output", "run", id]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The task's own reference comes after the pool's, so LOTE_APP_TOOL is
    // the task's version; both versioned names are set when both are used.
    let v1 = apps.join("1.0").display().to_string();
    let v2 = apps.join("2.0").display().to_string();
    assert_eq!(output("default"), format!("tool 1.0\n{v1}|{v2}\n"));
    assert_eq!(output("two"), format!("tool 2.0\n|{v2}\n"));
    let start = std::fs::read_to_string(
        node_dir(&server, "apps", &node).join("starttask/wd/from-start.txt"),
    )
    .unwrap();
    assert_eq!(start, "tool 2.0\n");
    // Deleting the default version takes the default with it.
    let out = cli(&server, &key, &["package", "delete", "tool", "1.0"]);
    assert!(out.status.success());
    let r = client
        .call(&Request::AddTasks {
            job: JobId::new("run").unwrap(),
            tasks: vec![with("after", None)],
            request_id: None,
        })
        .await;
    assert_eq!(rejection(r), Some(RejectionCode::ApplicationNotFound));
    stop_and_replay(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_and_file_commands_work_from_the_cli() {
    let server = ServerProcess::start(&[]);
    let (client, key, _) = server.account("acme").await;
    let work = open_tempdir();
    let dir = work.path().join("frames");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), "a").unwrap();
    std::fs::write(dir.join("sub/b.txt"), "bb").unwrap();
    let run = |args: &[&str]| {
        let out = cli(&server, &key, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&[
        "blob",
        "upload",
        "inputs",
        dir.to_str().unwrap(),
        "--prefix",
        "scene/",
    ]);
    assert!(text.contains("uploaded 2 blob(s), 3 bytes"), "{text}");
    let text = run(&["blob", "list", "inputs", "--prefix", "scene/"]);
    assert!(
        text.contains("scene/a.txt") && text.contains("scene/sub/b.txt"),
        "{text}"
    );
    let text = run(&["blob", "list"]);
    assert_eq!(text, "inputs\n");
    let back = work.path().join("back");
    run(&[
        "blob",
        "download",
        "inputs",
        "--prefix",
        "scene/",
        "--dest",
        back.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(back.join("sub/b.txt")).unwrap(),
        "bb"
    );
    let out = cli(&server, &key, &["blob", "show", "inputs", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no blob"),
        "{out:?}"
    );

    // A task with short-form files, then its files through the CLI.
    let env = Env::new(&client);
    env.pool("files").nodes(1).slots(1).without_waiting().await;
    env.job("io").on("files").await;
    run(&[
        "task",
        "add",
        "io",
        "t1",
        "--input",
        "inputs/scene/a.txt=in/a.txt",
        "--input-prefix",
        "inputs/scene/sub=more",
        "--upload",
        "out/*=results/run-1",
        "--command",
        "mkdir -p out && cat in/a.txt more/b.txt > out/ab.txt",
    ]);
    wait_job(&client, "io", Duration::from_secs(60)).await;
    let text = run(&["task", "files", "io", "t1", "wd", "--recursive"]);
    assert!(
        text.contains("wd/in/a.txt") && text.contains("wd/out/ab.txt"),
        "{text}"
    );
    let text = run(&["task", "file", "io", "t1", "wd/out/ab.txt"]);
    assert_eq!(text, "abb");
    let text = run(&[
        "blob",
        "download",
        "results",
        "run-1/ab.txt",
        "--dest",
        work.path().join("ab").to_str().unwrap(),
    ]);
    assert!(text.contains("downloaded 1 blob(s), 3 bytes"), "{text}");
    let text = run(&["blob", "delete", "inputs", "--prefix", "scene/"]);
    assert_eq!(text, "deleted 2 blob(s)\n");
    let help = run(&["blob", "--help"]);
    assert!(
        help.contains("lote blob upload inputs ./frames --prefix scene-1/"),
        "{help}"
    );
    stop_and_replay(server);
}

/// A pool's packages are unpacked on each node as it joins, before any
/// task asks for them (and without a start task to do it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_packages_are_unpacked_as_its_nodes_join() {
    let server = ServerProcess::start(&[]);
    let (client, _, _) = server.account("acme").await;
    let work = open_tempdir();
    let zip = work.path().join("tool.zip");
    zip_file(
        &zip,
        &[("bin/tool", b"#!/bin/sh\necho tool\n", 0o755)],
        None,
    );
    upload_package(&client, "tool", "1.0", &zip).await.unwrap();
    let pool = PoolSpec {
        application_packages: vec![PackageRef {
            id: "tool".into(),
            version: Some("1.0".into()),
        }],
        ..PoolSpec::fixed(
            PoolId::new("eager").unwrap(),
            AccountName::new("x").unwrap(),
            1,
            1,
        )
    };
    create_pool_spec(&client, pool).await;
    let node = nodes_up(&client, "eager", 1).await[0]
        .state
        .id
        .clone()
        .unwrap()
        .to_string();
    let unpacked = server
        .data_dir
        .join(format!("nodes/acme/eager/{node}/apps/tool/1.0/bin/tool"));
    eventually(Duration::from_secs(30), "the package unpacked", || async {
        if unpacked.is_file() {
            Ok(())
        } else {
            Err(format!("no {}", unpacked.display()))
        }
    })
    .await;
}
