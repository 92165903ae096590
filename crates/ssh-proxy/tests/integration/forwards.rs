//! Port forwarding from inside the workspace: `ssh -L` to a web server there, and `ssh -D` with
//! curl through the SOCKS port; and a blueprint that forbids it.

use std::process::{Child, Command, Stdio};

use crate::platform::Platform;
use crate::support::{free_port, ok, run};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut command: Command) -> Killed {
    Killed(command.stdin(Stdio::null()).spawn().unwrap())
}

async fn curl(args: Vec<String>) -> Option<String> {
    let mut command = Command::new(k8shell_testkit::require("curl", "curl", &[]).unwrap());
    command.args(["-fsS", "--max-time", "5"]).args(&args);
    let output = run(command).await;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_dynamic_forwards_reach_servers_inside_the_workspace() {
    let platform = Platform::with_alice().await;
    platform
        .create_workspace("alice", "closed", "allow.port_forwarding | force = false")
        .await;
    // busybox httpd goes to the background by itself.
    let mut serve = platform.client.ssh("alice", "alice").unwrap();
    serve.arg("mkdir -p www && echo from-the-workspace > www/index.html && httpd -p 127.0.0.1:8080 -h www");
    ok(&run(serve).await);

    let local = free_port();
    let _tunnel = spawn(
        platform
            .client
            .ssh_with(
                "alice",
                "alice",
                &[
                    "-N",
                    "-o",
                    "ExitOnForwardFailure=yes",
                    "-L",
                    &format!("{local}:127.0.0.1:8080"),
                ],
            )
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{local}/");
    let page = k8shell_testkit::poll_until("the -L forward to serve the page", || {
        curl(vec![url.clone()])
    })
    .await;
    assert_eq!(page, "from-the-workspace\n");

    let socks = free_port();
    let _socks = spawn(
        platform
            .client
            .ssh_with(
                "alice",
                "alice",
                &["-N", "-D", &format!("127.0.0.1:{socks}")],
            )
            .unwrap(),
    );
    let proxy = format!("127.0.0.1:{socks}");
    let page = k8shell_testkit::poll_until("the SOCKS proxy to serve the page", || {
        curl(vec![
            "--socks5-hostname".to_owned(),
            proxy.clone(),
            "http://localhost:8080/".to_owned(),
        ])
    })
    .await;
    assert_eq!(page, "from-the-workspace\n");

    // Where the blueprint forbids forwarding, the channel is refused.
    let refused_port = free_port();
    let mut refused = platform
        .client
        .ssh_with(
            "alice",
            "alice+closed",
            &[
                "-o",
                "ExitOnForwardFailure=yes",
                "-L",
                &format!("{refused_port}:127.0.0.1:8080"),
            ],
        )
        .unwrap();
    refused.arg("sleep 30");
    let _refused = spawn(refused);
    let url = format!("http://127.0.0.1:{refused_port}/");
    k8shell_testkit::poll_until("the forward listener to be up", || async {
        std::net::TcpStream::connect(("127.0.0.1", refused_port)).ok()
    })
    .await;
    assert_eq!(curl(vec![url]).await, None);
}
