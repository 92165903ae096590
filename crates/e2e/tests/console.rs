//! The web console in headless Chromium (Playwright, `crates/console/web/e2e`) against
//! k8shell-allinone on a platform host, the browser on a client host: sign in through the
//! OpenID provider, create a workspace, use its terminal, stop and start it, replay and seek the
//! recording, and visit every page, each checked with axe-core (WCAG 2.2 AA, light and dark).
//! Screenshots land in `target/…/console-screenshots`
//! (or `K8SHELL_ARTIFACTS`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use k8shell_e2e::{Hosts, OpenId, PLATFORM_IP, Platform, URL, lab_args};
use k8shell_testkit::SshClient;
use serde_json::json;

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/web")
}

/// What the browser half needs, or a failure that says how to get it.
fn check_prerequisites() -> PathBuf {
    assert!(
        k8shell_console::built(),
        "this build carries no console: run `npm ci && npm run build` in crates/console/web, then build again (scripts/test does both)"
    );
    let vitest = web_dir().join("node_modules/.bin/vitest");
    assert!(
        vitest.exists(),
        "{} is missing: run `npm ci` in crates/console/web (scripts/setup does)",
        vitest.display()
    );
    let chromium = std::env::var_os("K8SHELL_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.exists(),
        "{} is missing: sudo apt-get install chromium (scripts/setup does)",
        chromium.display()
    );
    vitest
}

fn artifacts() -> PathBuf {
    if let Some(dir) = std::env::var_os("K8SHELL_ARTIFACTS") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/console-… → target/<profile>/console-screenshots
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("console-screenshots")
}

#[test]
fn a_person_uses_the_console_in_a_browser() {
    let vitest = check_prerequisites();
    let hosts = Hosts::create();
    hosts.enter_client();
    let openid = OpenId::start(
        &hosts,
        &json!({"carol": {"email": "carol@example.com", "email_verified": true,
                          "preferred_username": "carol", "groups": ["admins", "k8shell-users"]}}),
    );
    let keys = SshClient::new(PLATFORM_IP, 2222, "unknown yet").unwrap();
    let admin_key = PathBuf::from(format!("{}.pub", keys.keygen("root").unwrap().display()));
    let mut args = lab_args(&admin_key, &openid);
    args.push("--no-default-workspace".to_owned());
    let mut platform =
        Platform::start(&hosts, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let screenshots = artifacts();
    let _ = std::fs::remove_dir_all(&screenshots);
    // Node and Chromium start from this thread, so they are on the client host too.
    let output = Command::new(&vitest)
        .args(["run", "--config", "vitest.e2e.config.ts"])
        .current_dir(web_dir())
        .env("K8SHELL_CONSOLE_URL", URL)
        .env("K8SHELL_OIDC_LOGIN", "carol")
        .env("K8SHELL_ARTIFACTS", &screenshots)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    let complained = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "the browser story failed ({}):\n{said}\n{complained}\nscreenshots so far: {}\nplatform:\n{}",
            output.status,
            screenshots.display(),
            platform.said()
        );
    }
    println!("{said}\nscreenshots: {}", screenshots.display());
    let shots = std::fs::read_dir(&screenshots).unwrap().count();
    assert!(
        shots >= 16,
        "expected a screenshot of every page, found {shots}"
    );
    let (status, said) = platform.stop();
    assert!(
        status.success(),
        "k8shell-allinone did not stop cleanly:\n{said}"
    );
}
