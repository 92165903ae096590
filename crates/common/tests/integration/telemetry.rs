//! Metrics as Prometheus scrapes them.

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use k8shell_common::telemetry::{Metrics, OPENMETRICS_CONTENT_TYPE};

#[tokio::test]
async fn metrics_are_served_in_openmetrics_text() {
    let metrics = Metrics::new("ssh-proxy");
    let logins = Counter::<u64>::default();
    metrics.register("logins", "Successful logins", logins.clone());
    logins.inc_by(3);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = metrics.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_lowercase()
            .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
        "{response}"
    );
    assert!(
        response.contains("k8shell_ssh_proxy_logins_total 3"),
        "{response}"
    );
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
}

#[test]
fn a_bad_log_filter_is_reported() {
    let err = k8shell_common::telemetry::parse_filter("info,[[[").unwrap_err();
    assert!(
        err.to_string().contains("invalid log filter \"info,[[[\""),
        "{err}"
    );
    assert!(k8shell_common::telemetry::parse_filter("info,k8shell_common=debug").is_ok());
}
