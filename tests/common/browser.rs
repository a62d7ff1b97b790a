//! A real headless Chromium for tests that use a page as a person would: ChromeDriver
//! (Debian's `chromium-driver`) on a free loopback port, one WebDriver session through
//! fantoccini, helpers to open a page, fill fields, click, read text and take a PNG
//! screenshot, and [`decode_qr`] to read QR codes off a screenshot (rqrr).
//!
//! The test bed's `build` installs Chromium and ChromeDriver, `env` exports their paths
//! (`MFA_TESTBED_CHROMIUM`, `MFA_TESTBED_CHROMEDRIVER`). Chromium runs with the flags this
//! machine needs (root, no network): `--headless --no-sandbox --disable-gpu
//! --disable-quic --no-first-run --disable-background-networking
//! --disable-component-update --disable-sync` and a fresh `--user-data-dir`.
//!
//! Each [`Browser`] is its own ChromeDriver and Chromium in a process group of their own;
//! [`Browser::close`] ends the session, and dropping a `Browser` (a failed test) kills the
//! group, so no browser outlives its test.

use std::io::Cursor;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

const NOT_INSTALLED: &str = "the browser tests need Debian's chromium and chromium-driver, which \
    `tests/testbed/testbed build` (and so `up`) installs with apt-get when they are missing, \
    and MFA_TESTBED_CHROMIUM / MFA_TESTBED_CHROMEDRIVER from `eval \"$(tests/testbed/testbed env)\"`. \
    Run `tests/testbed/testbed up && eval \"$(tests/testbed/testbed env)\"` and `cargo test` again \
    in that shell, or `tests/run`.";

/// The flags every Chromium here starts with (see the module's doc).
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Bound on starting ChromeDriver and Chromium, and on each wait for the page.
pub const BROWSER_WAIT: Duration = Duration::from_secs(60);

fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| panic!("{var} is not set: {NOT_INSTALLED}"));
    assert!(path.is_file(), "{var}={} does not exist: {NOT_INSTALLED}", path.display());
    path
}

/// A headless Chromium driven over WebDriver.
pub struct Browser {
    client: Option<Client>,
    driver: std::process::Child,
    /// The profile, ChromeDriver's log and screenshots; removed by `close`.
    dir: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a session in a fresh
    /// Chromium profile; panics with what ChromeDriver logged if that fails.
    pub async fn start() -> Self {
        let chromium = tool("MFA_TESTBED_CHROMIUM");
        let chromedriver = tool("MFA_TESTBED_CHROMEDRIVER");
        let dir = std::env::temp_dir().join(super::unique(&format!("mfa-browser-{}", std::process::id())));
        std::fs::create_dir_all(dir.join("profile")).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Its own process group, Chromium included, so Drop can end them all.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let mut browser = Self { client: None, driver, dir };

        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!("chromedriver exited ({status}) before listening; its log:\n{}", browser.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver not listening on port {port} after {BROWSER_WAIT:?}; its log:\n{}",
                browser.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", browser.dir.join("profile").display()));
        args.push("--window-size=1280,1024".into());
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let mut builder = ClientBuilder::rustls().expect("a WebDriver client");
        builder.capabilities(capabilities);
        let session = tokio::time::timeout(BROWSER_WAIT, builder.connect(&format!("http://127.0.0.1:{port}"))).await;
        match session {
            Ok(Ok(client)) => browser.client = Some(client),
            Ok(Err(e)) => panic!("no WebDriver session: {e}; chromedriver's log:\n{}", browser.log()),
            Err(_) => panic!("no WebDriver session within {BROWSER_WAIT:?}; chromedriver's log:\n{}", browser.log()),
        }
        browser
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// The process group of ChromeDriver and its Chromium (ChromeDriver's pid).
    pub fn process_group(&self) -> u32 {
        self.driver.id()
    }

    /// The end of ChromeDriver's log.
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn open(&self, url: &str) {
        self.client().goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The element `selector` (CSS), waiting up to [`BROWSER_WAIT`] for it to appear.
    pub async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        let wait = self.client().wait().at_most(BROWSER_WAIT).every(Duration::from_millis(50));
        match wait.for_element(Locator::Css(selector)).await {
            Ok(element) => element,
            Err(e) => panic!("no {selector:?} within {BROWSER_WAIT:?}: {e}\npage:\n{}", self.source().await),
        }
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        self.client().source().await.unwrap_or_else(|e| format!("(no page source: {e})"))
    }

    /// Types `value` into the field with `id` (after clearing it).
    pub async fn fill_id(&self, id: &str, value: &str) {
        let field = self.find(&format!("#{id}")).await;
        field.clear().await.unwrap_or_else(|e| panic!("clear #{id}: {e}"));
        field.send_keys(value).await.unwrap_or_else(|e| panic!("type into #{id}: {e}"));
    }

    /// Types `value` into the field whose `<label>` says `label` (its text, spaces
    /// collapsed): the label's `for`, or the field inside the label. This is how a person
    /// finds a field, so it also checks that the field is labelled.
    pub async fn fill_label(&self, label: &str, value: &str) {
        assert!(!label.contains('\''), "labels with a quote are not supported: {label}");
        let xpath = format!("//label[normalize-space(.)='{label}']");
        let element = match self.client().find(Locator::XPath(&xpath)).await {
            Ok(element) => element,
            Err(e) => panic!("no label {label:?}: {e}\npage:\n{}", self.source().await),
        };
        let field = match element.attr("for").await.ok().flatten() {
            Some(id) => self.find(&format!("[id='{id}']")).await,
            None => element
                .find(Locator::Css("input, textarea, select"))
                .await
                .unwrap_or_else(|e| panic!("label {label:?} has no `for` and no field inside: {e}")),
        };
        field.clear().await.unwrap_or_else(|e| panic!("clear the field of {label:?}: {e}"));
        field.send_keys(value).await.unwrap_or_else(|e| panic!("type into the field of {label:?}: {e}"));
    }

    /// Clicks the element `selector` (CSS).
    pub async fn click(&self, selector: &str) {
        self.find(selector).await.click().await.unwrap_or_else(|e| panic!("click {selector:?}: {e}"));
    }

    /// Clicks the button (or submit input) that says `text`.
    pub async fn click_button(&self, text: &str) {
        assert!(!text.contains('\''), "button texts with a quote are not supported: {text}");
        let xpath = format!("//button[normalize-space(.)='{text}'] | //input[@type='submit' and @value='{text}']");
        let button = match self.client().find(Locator::XPath(&xpath)).await {
            Ok(button) => button,
            Err(e) => panic!("no button {text:?}: {e}\npage:\n{}", self.source().await),
        };
        button.click().await.unwrap_or_else(|e| panic!("click {text:?}: {e}"));
    }

    /// The visible text of `selector` (CSS).
    pub async fn text(&self, selector: &str) -> String {
        self.find(selector).await.text().await.unwrap_or_else(|e| panic!("text of {selector:?}: {e}"))
    }

    /// Waits until the text of `selector` contains `expected`; panics after `timeout` with
    /// the text seen last.
    pub async fn wait_for_text(&self, selector: &str, expected: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = match self.client().find(Locator::Css(selector)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if seen.contains(expected) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{selector:?} did not say {expected:?} within {timeout:?}; it said {seen:?}\npage:\n{}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URL the browser shows now.
    pub async fn url(&self) -> String {
        self.client().current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| panic!("current URL: {e}"))
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client().screenshot().await.unwrap_or_else(|e| panic!("screenshot: {e}"))
    }

    /// A PNG of the viewport, also written to `path` (to look at, or to keep).
    pub async fn save_screenshot(&self, path: &Path) -> Vec<u8> {
        let png = self.screenshot().await;
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        png
    }

    /// Ends the session (Chromium quits), stops ChromeDriver and removes the profile.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), client.close()).await;
        }
        // Drop stops ChromeDriver and whatever is left of its group, and removes the dir.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group is ChromeDriver's own (process_group(0) above): ChromeDriver and the
        // Chromium it started, nothing else.
        let group = format!("-{}", self.driver.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// The text of every QR code found in the PNG `png` (a screenshot), in the order rqrr
/// finds them; codes it sees but cannot decode are left out. Panics if `png` is no PNG.
pub fn decode_qr(png: &[u8]) -> Vec<String> {
    let (width, height, grey) = greyscale(png);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| grey[y * width + x]);
    image.detect_grids().iter().filter_map(|grid| grid.decode().ok().map(|(_, text)| text)).collect()
}

/// The PNG `png` as 8-bit luminance, row by row: width, height, pixels.
pub fn greyscale(png: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut decoder = png::Decoder::new(Cursor::new(png));
    // Palette and low bit depths to 8-bit samples, 16-bit to 8.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("not a PNG: {e}"));
    let mut buffer = vec![0; reader.output_buffer_size().expect("PNG size fits in memory")];
    let frame = reader.next_frame(&mut buffer).unwrap_or_else(|e| panic!("cannot decode the PNG: {e}"));
    let (width, height) = (frame.width as usize, frame.height as usize);
    let channels = frame.color_type.samples();
    let pixels = &buffer[..frame.buffer_size()];
    let row = frame.line_size;
    let mut grey = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let p = &pixels[y * row + x * channels..][..channels];
            let luma = match frame.color_type {
                png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => p[0],
                // ITU-R BT.601 weights; alpha ignored (screenshots are opaque).
                _ => ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000) as u8,
            };
            grey.push(luma);
        }
    }
    (width, height, grey)
}
