//! Headless Chromium (Debian's `chromium`) over WebDriver (`chromedriver`,
//! driven by fantoccini), for the tests that render a page: the web
//! approval page and the HTML review. Both are installed by `cargo xtask
//! setup`. Screenshots go to target/test-artifacts/.
use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use crate::{PATIENCE, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    pub fn start() -> Self {
        let port = free_port();
        let tmp = std::env::temp_dir();
        let profile = tmp.join(crate::claim_dir(&tmp, "agent-guard-chromium"));
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER}: {e} (installed by `cargo xtask setup`)"));
        // chromedriver is up when it accepts connections (a liveness bound,
        // not a timing assertion).
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A session that emulates a phone: the web page must work at this size.
pub async fn browser(driver: &Driver) -> Client {
    session(
        driver,
        json!({"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0, "touch": true}}),
    )
    .await
}

/// A desktop-sized session (a report is read on a desk).
pub async fn desktop_browser(driver: &Driver) -> Client {
    session(
        driver,
        json!({"deviceMetrics": {"width": 1280, "height": 1600, "pixelRatio": 1.0, "touch": false}}),
    )
    .await
}

async fn session(driver: &Driver, device: serde_json::Value) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
            "mobileEmulation": device,
        }),
    );
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

pub fn artifact(name: &str, png: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    std::fs::write(dir.join(name), png).expect("screenshot");
    eprintln!("screenshot: {}", dir.join(name).display());
}
