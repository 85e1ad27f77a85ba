//! For the console's tests: a small HTTP/1.1 client over a real socket
//! (to send what a browser would not: forged origins, missing tokens,
//! oversized bodies), and a real headless Chromium driven through
//! chromedriver (WebDriver).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect to the console");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server that refuses a body (too large) may answer and close before
    // all of it is sent: the write then fails, and the answer is still
    // there to read (followed, maybe, by a reset).
    let sent = stream.write_all(body);
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        sent.unwrap();
        read.unwrap();
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// A signed-in console session, as a page holds it.
pub struct Session {
    pub addr: String,
    pub cookie: String,
    pub csrf: String,
}

impl Session {
    /// Signs in with an account (None: the operator) and a key.
    pub fn sign_in(addr: &str, account: Option<&str>, key: &str) -> Result<Session, HttpResponse> {
        let body = serde_json::json!({ "account": account, "key": key }).to_string();
        let r = http(
            addr,
            "POST",
            "/api/session",
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        if r.status != 200 {
            return Err(r);
        }
        let set = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        Ok(Session {
            addr: addr.to_string(),
            cookie,
            csrf: r.json()["csrf"].as_str().unwrap().to_string(),
        })
    }

    /// A message-API request through the console, as its page sends it.
    pub fn call(&self, request: serde_json::Value) -> HttpResponse {
        http(
            &self.addr,
            "POST",
            "/api/call",
            &[
                ("cookie", &self.cookie),
                ("x-lote-csrf", &self.csrf),
                ("content-type", "application/json"),
            ],
            request.to_string().as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http(&self.addr, "GET", path, &[("cookie", &self.cookie)], b"")
    }
}

/// Where the browser and its driver are, or why a test cannot run here.
pub fn browser_paths() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| names.iter().map(PathBuf::from).find(|p| p.exists());
    let chromium = find(&[
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]);
    let driver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => Err("Chromium and chromedriver are not installed (scripts/test.sh installs Debian's chromium and chromium-driver)".into()),
    }
}

/// A chromedriver process on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
    _profile: tempfile::TempDir,
    pub chromium: PathBuf,
    pub profile: PathBuf,
}

impl Driver {
    pub fn start() -> Result<Driver, String> {
        let (chromium, driver) = browser_paths()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver: {e}"))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        Ok(Driver {
            child,
            url,
            chromium,
            profile: profile.path().to_path_buf(),
            _profile: profile,
        })
    }

    /// A new headless browser session.
    pub async fn browser(&self) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", self.profile.join(format!("p{}", lote::clock::new_uuid())).display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium's own processes end with their session; any left over
        // from this profile are killed.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.display().to_string())
            .status();
    }
}

/// Where screenshots of the console go (a CI artefact).
pub fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
