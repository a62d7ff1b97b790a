//! The browser pipeline the self-service enrollment test (issue 11) stands on, proven on
//! a page served here: headless Chromium opens it, a screenshot's QR code (rendered by
//! `mfa_operator::qr::qr_png`, as the enrollment page will) decodes back to the exact
//! `otpauth://` URI, and a form filled by its labels reaches the server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Router, routing::post};

use crate::common::browser::{Browser, decode_qr};

/// The fields of one form post, in order.
type Fields = Vec<(String, String)>;

#[derive(Clone)]
struct Page {
    qr: Arc<Vec<u8>>,
    posted: Arc<Mutex<Vec<Fields>>>,
}

const FORM: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Browser smoke test</title></head>
<body>
<h1>Scan the code</h1>
<img id="qr" src="/qr.png" alt="QR code to scan with an authenticator app">
<form method="post" action="/submit">
  <label for="code1">First code</label> <input id="code1" name="code1" inputmode="numeric" autocomplete="one-time-code">
  <label>Second code <input id="code2" name="code2" inputmode="numeric"></label>
  <button type="submit">Enable MFA</button>
</form>
</body></html>"#;

async fn form() -> Html<&'static str> {
    Html(FORM)
}

async fn qr(State(page): State<Page>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "no-store")], page.qr.as_ref().clone())
}

async fn submit(State(page): State<Page>, Form(fields): Form<Fields>) -> Html<String> {
    let count = fields.len();
    page.posted.lock().expect("posted").push(fields);
    Html(format!("<!DOCTYPE html><html lang=\"en\"><body><p id=\"result\">Received {count} fields</p></body></html>"))
}

#[tokio::test]
async fn chromium_reads_the_qr_code_and_submits_the_form() {
    let seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let uri = mfa_operator::qr::otpauth_uri("mfa-operator browser test", "alice.smith+ops@123456789012", seed);
    let png = mfa_operator::qr::qr_png(&uri).expect("QR PNG");
    let page = Page { qr: Arc::new(png), posted: Arc::default() };
    let app = Router::new()
        .route("/", get(form))
        .route("/qr.png", get(qr))
        .route("/submit", post(submit))
        .with_state(page.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    let browser = Browser::start().await;
    browser.open(&format!("{base}/")).await;
    assert_eq!(browser.text("h1").await, "Scan the code");
    // The image is decoded before the screenshot is taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let loaded = browser
            .client()
            .execute("const i = document.getElementById('qr'); return i.complete && i.naturalWidth > 0;", vec![])
            .await
            .expect("run a script");
        if loaded == serde_json::json!(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the QR image did not load:\n{}", browser.source().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let screenshot = browser.screenshot().await;
    let decoded = decode_qr(&screenshot);
    if decoded != [uri.clone()] {
        let kept = std::env::temp_dir().join(format!("mfa-browser-smoke-{}.png", std::process::id()));
        let _ = std::fs::write(&kept, &screenshot);
        panic!("decoded {decoded:?} from the screenshot (kept at {}), expected exactly [{uri:?}]", kept.display());
    }

    browser.fill_label("First code", "123456").await;
    browser.fill_label("Second code", "654321").await;
    browser.click_button("Enable MFA").await;
    browser.wait_for_text("#result", "Received 2 fields", Duration::from_secs(30)).await;
    assert_eq!(browser.url().await, format!("{base}/submit"));
    let posted = page.posted.lock().expect("posted").clone();
    let expected = vec![("code1".to_owned(), "123456".to_owned()), ("code2".to_owned(), "654321".to_owned())];
    assert_eq!(posted, [expected], "what the server received");
    browser.close().await;
}

#[test]
fn decode_qr_reads_the_products_png() {
    // Without a browser: the PNG qr_png makes is read back by the same decoder.
    let uri = mfa_operator::qr::otpauth_uri("mfa-operator", "bob@123456789012", "JBSWY3DPEHPK3PXP");
    let png = mfa_operator::qr::qr_png(&uri).expect("QR PNG");
    assert_eq!(decode_qr(&png), [uri]);
}

#[tokio::test]
async fn a_dropped_browser_leaves_no_process_behind() {
    // What a failing test does: the Browser is dropped without close().
    let browser = Browser::start().await;
    browser.open("about:blank").await;
    let group = format!("-{}", browser.process_group());
    drop(browser);
    let alive = || {
        std::process::Command::new("kill")
            .args(["-0", "--", &group])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // Killed at once; init reaps Chromium's processes a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive() {
        assert!(std::time::Instant::now() < deadline, "processes of group {group} still run 10 s after the drop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
