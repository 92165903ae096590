//! The console's files at `/`: every page path gets the app, files are cached by their hash,
//! and neither a missing file nor an unknown API path is answered with the app.

use crate::client::send;
use crate::platform::Platform;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_at_every_page_path_with_a_strict_policy() {
    assert!(
        k8shell_console::built(),
        "this build carries no console: run `npm ci && npm run build` in crates/console/web (scripts/test does)"
    );
    let platform = Platform::start().await;
    let addr = platform.addr;

    let index = send(addr, "GET", "/", &[], None).await;
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        index.text().contains("<div id=\"app\">"),
        "{}",
        index.text()
    );
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let policy = index.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));

    // A page the browser routes: the same document.
    let page = send(
        addr,
        "GET",
        "/workspaces/0b5b1c55-0000-4000-8000-000000000000/terminal",
        &[],
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, index.body);

    // The script it names, kept by browsers for a year, and revalidated by its tag.
    let text = index.text();
    let script = text
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    assert!(script.starts_with("/assets/"), "{script}");
    let js = send(addr, "GET", script, &[], None).await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let etag = js.header("etag").unwrap().to_owned();
    let again = send(addr, "GET", script, &[("if-none-match", &etag)], None).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // What is not there stays a 404 problem, not the app.
    for path in [
        "/assets/gone-1234.js",
        "/api/v1/nothing-here",
        "/api/v2/workspaces",
    ] {
        let missing = send(addr, "GET", path, &[], None).await;
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(
            missing.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
    }
    let posted = send(addr, "POST", "/workspaces", &[], None).await;
    assert_eq!(posted.status, 404);
}
