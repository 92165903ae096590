//! Python's paramiko, an SSH implementation independent of OpenSSH, as a second client: exec
//! with exit status and stderr, and SFTP both ways.

use std::process::Command;

use crate::platform::Platform;
use crate::support::{noise_file, ok, run, sha256};

/// The interpreter of scripts/setup's virtual environment, which has paramiko.
fn python() -> std::path::PathBuf {
    k8shell_testkit::python_with("paramiko").unwrap()
}

const SCRIPT: &str = r#"
import sys, paramiko
host, port, user, key, known, upload, download = sys.argv[1:]
client = paramiko.SSHClient()
client.load_host_keys(known)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect(host, int(port), username=user, key_filename=key,
               allow_agent=False, look_for_keys=False)
stdin, stdout, stderr = client.exec_command("echo from-paramiko; echo oops >&2; exit 4")
print(stdout.read().decode().strip(), stderr.read().decode().strip(),
      stdout.channel.recv_exit_status())
sftp = client.open_sftp()
sftp.put(upload, "paramiko.bin")
sftp.get("paramiko.bin", download)
print(sorted(n for n in sftp.listdir(".") if n.startswith("paramiko")))
sftp.close()
client.close()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paramiko_runs_commands_and_moves_files() {
    let platform = Platform::with_alice().await;
    let upload = platform.dir.path().join("paramiko-up.bin");
    let download = platform.dir.path().join("paramiko-down.bin");
    noise_file(&upload, 20 * 1024 * 1024);
    let port = platform.proxy_config.listen.port().to_string();
    let mut command = Command::new(python());
    command
        .args(["-c", SCRIPT, "127.0.0.1", &port, "alice"])
        .arg(platform.client.keygen("alice").unwrap())
        .arg(platform.client.dir().join("known_hosts"))
        .arg(&upload)
        .arg(&download);
    let printed = ok(&run(command).await);
    assert_eq!(printed, "from-paramiko oops 4\n['paramiko.bin']\n");
    assert_eq!(sha256(&download), sha256(&upload));
}
