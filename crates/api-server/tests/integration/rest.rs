//! Signing in, the caller's account, workspaces and administration over REST, and what each
//! user may not see or touch.

use serde_json::json;

use crate::client::send;
use crate::platform::{ADMIN, Platform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_in_with_ssh_keys_and_manage_their_own_things_only() {
    let platform = Platform::start().await;
    let alice = platform.user("alice").await;
    let bob = platform.user("bob").await;

    // Who am I.
    let me = alice.get("/api/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["user"]["username"], "alice");
    assert_eq!(me.json()["signed_in_with"], "access_token");

    // A key that is not hers does not sign her in, with the same words as an unknown user.
    let stranger = platform.keys.keygen("stranger").unwrap();
    let refused = platform.ssh_login_with("alice", &stranger).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let nobody = platform.ssh_login_with("nobody", &stranger).await;
    assert_eq!(nobody.status, 401);
    assert_eq!(refused.json()["detail"], nobody.json()["detail"]);
    // No credential, a bad one.
    let anonymous = send(platform.addr, "GET", "/api/v1/me", &[], None).await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.json()["detail"]
            .as_str()
            .unwrap()
            .contains("k8shell login")
    );
    let forged = send(
        platform.addr,
        "GET",
        "/api/v1/me",
        &[("authorization", "Bearer a.b.c")],
        None,
    )
    .await;
    assert_eq!(forged.status, 401);

    // Keys: her new key is listed for her, not for bob, and bob cannot remove it.
    let extra = platform.keys.public_key("alice-laptop").unwrap();
    let added = alice
        .post("/api/v1/keys", json!({"public_key": extra}))
        .await;
    assert_eq!(added.status, 201, "{}", added.text());
    let fingerprint = added.json()["fingerprint"].as_str().unwrap().to_owned();
    let listed = alice.get("/api/v1/keys").await.json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(
        bob.get("/api/v1/keys")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let encoded = fingerprint.replace('/', "%2F").replace('+', "%2B");
    assert_eq!(
        bob.delete(&format!("/api/v1/keys/{encoded}")).await.status,
        404
    );
    assert_eq!(
        alice
            .delete(&format!("/api/v1/keys/{encoded}"))
            .await
            .status,
        204
    );
    assert_eq!(
        alice
            .get("/api/v1/keys")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let bad = alice
        .post(
            "/api/v1/keys",
            json!({"public_key": "ssh-ed25519 nonsense"}),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());

    // API tokens: made, used, listed without the secret, revoked, refused.
    let made = alice.post("/api/v1/tokens", json!({"name": "ci"})).await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    let token = crate::client::Api {
        addr: platform.addr,
        token: made["secret"].as_str().unwrap().to_owned(),
    };
    let via_token = token.get("/api/v1/me").await.json();
    assert_eq!(via_token["user"]["username"], "alice");
    assert_eq!(via_token["signed_in_with"], "api_token");
    // A token cannot make itself a lasting way in.
    let minted = token.post("/api/v1/tokens", json!({"name": "more"})).await;
    assert_eq!(minted.status, 403, "{}", minted.text());
    let keyed = token
        .post(
            "/api/v1/keys",
            json!({"public_key": platform.keys.public_key("x").unwrap()}),
        )
        .await;
    assert_eq!(keyed.status, 403, "{}", keyed.text());
    let tokens = alice.get("/api/v1/tokens").await.text();
    assert!(tokens.contains("\"ci\"") && !tokens.contains(made["secret"].as_str().unwrap()));
    let id = made["token"]["id"].as_str().unwrap();
    assert_eq!(
        bob.delete(&format!("/api/v1/tokens/{id}")).await.status,
        404
    );
    assert_eq!(token.get("/api/v1/me").await.status, 200);
    let revoked = alice.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(token.get("/api/v1/me").await.status, 401);

    // Workspaces: hers, invisible to bob in every way.
    let created = alice
        .post(
            "/api/v1/workspaces",
            json!({"name": "web", "blueprint_source": platform.blueprint(""), "stopped": true}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let workspace = created.json();
    let id = workspace["id"].as_str().unwrap();
    assert_eq!(workspace["owner"], "alice");
    assert_eq!(workspace["ssh_command"], "ssh -p 2222 alice+web@127.0.0.1");
    let mine = alice.get("/api/v1/workspaces").await.json();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert!(
        bob.get("/api/v1/workspaces").await.json()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let path = format!("/api/v1/workspaces/{id}");
    assert_eq!(bob.get(&path).await.status, 404);
    assert_eq!(
        bob.post(&format!("{path}:start"), json!({})).await.status,
        404
    );
    assert_eq!(bob.delete(&path).await.status, 404);
    assert_eq!(bob.get("/api/v1/workspaces?owner=alice").await.status, 403);
    assert_eq!(
        bob.get(&format!("/api/v1/workspaces/events?id={id}"))
            .await
            .status,
        404
    );
    let bobs_view = bob
        .get(&format!("/api/v1/sessions?workspace_id={id}"))
        .await;
    assert_eq!(bobs_view.status, 200);
    assert!(bobs_view.json()["items"].as_array().unwrap().is_empty());
    assert_eq!(alice.get(&path).await.json()["state"], "stopped");
    // A duplicate name and a broken blueprint are explained.
    let again = alice
        .post(
            "/api/v1/workspaces",
            json!({"name": "web", "blueprint_source": platform.blueprint("")}),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());
    let broken = alice
        .post(
            "/api/v1/blueprints/validate",
            json!({"source": "{ name = 5 }", "file": "mine.ncl"}),
        )
        .await
        .json();
    assert_eq!(broken["valid"], false);
    assert!(!broken["errors"][0]["message"].as_str().unwrap().is_empty());
    let fine = alice
        .post(
            "/api/v1/blueprints/validate",
            json!({"source": platform.blueprint("")}),
        )
        .await
        .json();
    assert_eq!(fine["valid"], true, "{fine}");
    // A blueprint that never ends costs its sender an error, not the server.
    let endless = alice
        .post(
            "/api/v1/blueprints/validate",
            json!({"source": "let rec f = fun x => f (x + 1) in f 0"}),
        )
        .await;
    assert_eq!(endless.status, 400, "{}", endless.text());
    assert!(
        endless.json()["detail"]
            .as_str()
            .unwrap()
            .contains("limits"),
        "{}",
        endless.text()
    );
    // Creating from it is refused before the provisioner sees it.
    let endless_workspace = alice
        .post(
            "/api/v1/workspaces",
            json!({"name": "loop", "blueprint_source": "let rec f = fun x => f (x + 1) in f 0"}),
        )
        .await;
    assert_eq!(
        endless_workspace.status,
        400,
        "{}",
        endless_workspace.text()
    );
    assert!(
        endless_workspace.json()["detail"]
            .as_str()
            .unwrap()
            .contains("limits")
    );
    let examples = alice.get("/api/v1/blueprints").await.json();
    assert!(
        examples
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "busybox")
    );
    // Unknown actions and ids are problems, not crashes.
    assert_eq!(
        alice
            .post(&format!("{path}:explode"), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(alice.get("/api/v1/workspaces/not-an-id").await.status, 400);

    // Administration: refused to alice, allowed to the administrator.
    assert_eq!(alice.get("/api/v1/users").await.status, 403);
    assert_eq!(alice.get("/api/v1/decisions").await.status, 403);
    assert_eq!(alice.get("/api/v1/sessions?user=bob").await.status, 403);
    let admin = platform.sign_in(ADMIN).await;
    let users = admin.get("/api/v1/users").await;
    assert_eq!(users.status, 200, "{}", users.text());
    let names: Vec<String> = users.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"alice".to_owned()) && names.contains(&"bob".to_owned()));
    assert_eq!(admin.get(&path).await.status, 200);
    let carol_key = platform.keys.public_key("carol").unwrap();
    let carol = admin
        .post(
            "/api/v1/users",
            json!({"username": "carol", "public_keys": [carol_key]}),
        )
        .await;
    assert_eq!(carol.status, 201, "{}", carol.text());
    let carol = platform.sign_in("carol").await;
    assert_eq!(
        carol.get("/api/v1/me").await.json()["user"]["username"],
        "carol"
    );
    // A suspension takes effect at once.
    assert_eq!(
        admin
            .post("/api/v1/users/carol:suspend", json!({}))
            .await
            .status,
        200
    );
    assert_eq!(carol.get("/api/v1/me").await.status, 403);
    let denials = admin.get("/api/v1/decisions?denied=true&domain=api").await;
    assert_eq!(denials.status, 200, "{}", denials.text());
    assert!(
        denials.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["input"]["user"]["username"] == "alice"),
        "alice's refused admin calls are in the decision log"
    );

    // Deleting leaves nothing for her to see.
    assert_eq!(alice.delete(&path).await.status, 202);
    k8shell_testkit::poll_until("the workspace to be gone", || {
        let alice = alice.clone();
        let path = path.clone();
        async move { (alice.get(&path).await.status == 404).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sessions_need_the_csrf_token_and_errors_are_problems() {
    let platform = Platform::start().await;
    platform.add_user("alice").await;
    let key = platform.keys.keygen("alice").unwrap();
    // The SSH login can set the browser's cookies too.
    let challenge = send(
        platform.addr,
        "POST",
        "/api/v1/auth/ssh/challenge",
        &[],
        Some(json!({"username": "alice"})),
    )
    .await
    .json();
    let message = platform.dir.path().join("m");
    std::fs::write(&message, challenge["message"].as_str().unwrap()).unwrap();
    let signed = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "k8shell-login", "-f"])
        .arg(&key)
        .arg(&message)
        .status()
        .unwrap();
    assert!(signed.success());
    let signature = std::fs::read_to_string(message.with_extension("sig")).unwrap();
    let login = send(
        platform.addr,
        "POST",
        "/api/v1/auth/ssh",
        &[],
        Some(
            json!({"username": "alice", "challenge_id": challenge["challenge_id"],
                    "signature": signature, "set_cookie": true}),
        ),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let set_cookie: Vec<&str> = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        set_cookie
            .iter()
            .any(|c| c.starts_with("__Host-k8shell-session=")
                && c.contains("HttpOnly")
                && c.contains("Secure")
                && c.contains("SameSite=Lax")),
        "{set_cookie:?}"
    );
    let cookies = login.cookies().join("; ");
    let csrf = login
        .cookies()
        .iter()
        .find_map(|c| c.strip_prefix("__Host-k8shell-csrf=").map(str::to_owned))
        .unwrap();
    // The same challenge cannot be used twice.
    let replay = send(platform.addr, "POST", "/api/v1/auth/ssh", &[],
        Some(json!({"username": "alice", "challenge_id": challenge["challenge_id"], "signature": signature}))).await;
    assert_eq!(replay.status, 401);

    let me = send(
        platform.addr,
        "GET",
        "/api/v1/me",
        &[("cookie", &cookies)],
        None,
    )
    .await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["csrf_token"].as_str(), Some(csrf.as_str()));
    // A change without the CSRF header, or from another site, is refused.
    let body = Some(json!({"name": "x"}));
    let without = send(
        platform.addr,
        "POST",
        "/api/v1/tokens",
        &[("cookie", &cookies)],
        body.clone(),
    )
    .await;
    assert_eq!(without.status, 403, "{}", without.text());
    assert!(
        without.json()["detail"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token")
    );
    let origin = format!("http://{}", platform.addr);
    let cross = send(
        platform.addr,
        "POST",
        "/api/v1/tokens",
        &[
            ("cookie", &cookies),
            ("x-csrf-token", &csrf),
            ("origin", "https://evil.example"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(cross.status, 403);
    let with = send(
        platform.addr,
        "POST",
        "/api/v1/tokens",
        &[
            ("cookie", &cookies),
            ("x-csrf-token", &csrf),
            ("origin", &origin),
        ],
        body,
    )
    .await;
    assert_eq!(with.status, 201, "{}", with.text());
    // Logging out clears the cookies.
    let out = send(platform.addr, "POST", "/api/v1/auth/logout", &[], None).await;
    assert_eq!(out.status, 204);
    assert!(out.cookies().iter().any(|c| c == "__Host-k8shell-session="));

    // Malformed requests and unknown paths answer problem+json with a request id.
    let malformed = send(
        platform.addr,
        "POST",
        "/api/v1/auth/ssh/challenge",
        &[],
        Some(json!({"user": 1})),
    )
    .await;
    assert_eq!(malformed.status, 422, "{}", malformed.text());
    assert_eq!(
        malformed.header("content-type"),
        Some("application/problem+json")
    );
    assert!(malformed.header("x-request-id").is_some());
    let unknown = send(
        platform.addr,
        "GET",
        "/api/v1/nope",
        &[("x-request-id", "trace-me")],
        None,
    )
    .await;
    // (Other paths outside /api are the console's pages.)
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(unknown.header("x-request-id"), Some("trace-me"));

    // The served OpenAPI document is the committed one; health, readiness and metrics answer.
    let served = send(platform.addr, "GET", "/api/v1/openapi.json", &[], None).await;
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert_eq!(served.text(), committed);
    assert_eq!(
        send(platform.addr, "GET", "/readyz", &[], None)
            .await
            .status,
        200
    );
    let metrics = send(platform.addr, "GET", "/metrics", &[], None)
        .await
        .text();
    assert!(
        metrics.contains("k8shell_api_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/api/v1/tokens\""), "{metrics}");

    // The login endpoints are rate limited per address.
    let mut limited = None;
    for _ in 0..40 {
        let answer = send(
            platform.addr,
            "POST",
            "/api/v1/auth/ssh/challenge",
            &[],
            Some(json!({"username": "alice"})),
        )
        .await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("40 logins in a row were all let through");
    assert!(limited.header("retry-after").is_some());
}
