//! The browser terminal: a shell over a WebSocket, resized, recorded like SSH, and refused to
//! users who may not enter.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::client::send;
use crate::platform::Platform;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(platform: &Platform, token: &str, workspace: &str) -> Socket {
    let url = format!(
        "ws://{}/api/v1/workspaces/{workspace}/terminal?cols=80&rows=24",
        platform.addr
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
}

/// Reads until the screen (all binary output so far) contains `wanted`, collecting control
/// messages on the way.
async fn read_until(
    socket: &mut Socket,
    screen: &mut String,
    controls: &mut Vec<serde_json::Value>,
    wanted: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !screen.contains(wanted) {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no {wanted:?} on the terminal; it shows:\n{screen}\ncontrols: {controls:?}")
            });
        match message {
            Some(Ok(Message::Binary(data))) => screen.push_str(&String::from_utf8_lossy(&data)),
            Some(Ok(Message::Text(text))) => controls.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(_)) => {}
            other => {
                panic!("the terminal ended before {wanted:?}: {other:?}\n{screen}\n{controls:?}")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_terminal_runs_a_shell_and_is_recorded() {
    let platform = Platform::start().await;
    let alice = platform.user("alice").await;
    let bob = platform.user("bob").await;
    let created = alice
        .post(
            "/api/v1/workspaces",
            json!({"name": "default", "blueprint_source": platform.blueprint(""), "stopped": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();

    let mut socket = open(&platform, &alice.token, &id).await;
    let (mut screen, mut controls) = (String::new(), Vec::new());
    read_until(&mut socket, &mut screen, &mut controls, "$ ").await;
    // The stopped workspace was started, and the browser was told.
    assert!(
        controls.iter().any(|c| c["type"] == "status"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("starting workspace alice/default")),
        "{controls:?}"
    );
    assert!(
        controls.iter().any(|c| c["type"] == "ready"),
        "{controls:?}"
    );
    socket
        .send(Message::Binary(b"echo hi-$((40+2))\r".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut socket, &mut screen, &mut controls, "hi-42").await;
    socket
        .send(Message::Text(
            json!({"type": "resize", "cols": 100, "rows": 30})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    socket
        .send(Message::Binary(b"stty size\r".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut socket, &mut screen, &mut controls, "30 100").await;
    socket
        .send(Message::Binary(b"exit 3\r".to_vec().into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !controls.iter().any(|c| c["type"] == "exit") {
        match tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => controls.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(_)) => {}
            other => panic!("no exit message: {other:?} {controls:?}"),
        }
    }
    assert!(
        controls
            .iter()
            .any(|c| c["type"] == "exit" && c["code"] == 3),
        "{controls:?}"
    );

    // The session is listed as a console session, with its recording.
    let session =
        k8shell_testkit::poll_until("the console session's recording to be stored", || {
            let alice = alice.clone();
            async move {
                let listed = alice.get("/api/v1/sessions").await.json();
                let session = listed["items"]
                    .as_array()?
                    .iter()
                    .find(|s| s["kind"] == "console")?
                    .clone();
                let details = alice
                    .get(&format!("/api/v1/sessions/{}", session["id"].as_str()?))
                    .await
                    .json();
                let recording = details["recordings"]
                    .as_array()?
                    .iter()
                    .find(|r| r["complete"] == true)?
                    .clone();
                (session["live"] == false).then_some((details, recording))
            }
        })
        .await;
    let (details, recording) = session;
    assert_eq!(details["session"]["workspace"], "alice/default");
    assert_eq!(
        details["session"]["client_addr"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("127.0.0.1")
    );
    assert!(
        details["session"]["end_reason"]
            .as_str()
            .unwrap()
            .contains("status 3"),
        "{details}"
    );
    let recording_id = recording["id"].as_str().unwrap();
    let cast = alice
        .get(&format!("/api/v1/recordings/{recording_id}"))
        .await;
    assert_eq!(cast.status, 200, "{}", cast.text());
    assert_eq!(cast.header("content-type"), Some("application/x-asciicast"));
    let text = cast.text();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert!(text.contains("hi-42"), "{text}");
    assert!(
        text.contains("\"r\", \"100x30\""),
        "the resize is recorded: {text}"
    );
    // A byte range of it, as a player seeking in a long recording asks.
    let bearer = format!("Bearer {}", alice.token);
    let part = send(
        platform.addr,
        "GET",
        &format!("/api/v1/recordings/{recording_id}"),
        &[("authorization", &bearer), ("range", "bytes=0-9")],
        None,
    )
    .await;
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, text.as_bytes()[..10].to_vec());

    // Bob cannot enter, see the session, or read the recording.
    let mut refused = open(&platform, &bob.token, &id).await;
    let (mut nothing, mut said) = (String::new(), Vec::new());
    while let Some(Ok(message)) = refused.next().await {
        match message {
            Message::Text(text) => {
                said.push(serde_json::from_str::<serde_json::Value>(&text).unwrap())
            }
            Message::Binary(data) => nothing.push_str(&String::from_utf8_lossy(&data)),
            _ => {}
        }
    }
    assert!(nothing.is_empty(), "{nothing}");
    // Refused without telling whose workspace it is or its name.
    assert!(
        !said.iter().any(|c| c.to_string().contains("alice/default")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|c| c["type"] == "error"
            && c["message"]
                .as_str()
                .unwrap()
                .contains("does not exist or is not yours")),
        "{said:?}"
    );
    let session_id = details["session"]["id"].as_str().unwrap();
    assert_eq!(
        bob.get(&format!("/api/v1/sessions/{session_id}"))
            .await
            .status,
        404
    );
    assert_eq!(
        bob.get(&format!("/api/v1/recordings/{recording_id}"))
            .await
            .status,
        404
    );
    assert_eq!(
        bob.post(
            &format!("/api/v1/sessions/{session_id}:terminate"),
            json!({})
        )
        .await
        .status,
        404
    );
}
