//! The `test-xenstored` binary: flags, readiness line, traffic log, shutdown.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_test-xenstored");

/// Starts the binary and waits for its "ready" line.
fn spawn(args: &[&std::ffi::OsStr]) -> Child {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    child
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_with_init_traffic_and_pidfile() {
    let dir = scratch("bin");
    let socket = dir.join("socket");
    let init = dir.join("init");
    let traffic = dir.join("traffic");
    let pidfile = dir.join("pid");
    std::fs::write(
        &init,
        "# backend of domain 5\n\
         \n\
         /local/domain/0/backend/vif/5/0/bridge=xenbr0\n\
         /local/domain/0/backend/vif/5/0/ip=10.0.0.2 10.0.0.3\n\
         /local/domain/0/backend/vif/5/0/odd=a=b = c\n",
    )
    .unwrap();
    let mut child = spawn(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--init".as_ref(),
        init.as_os_str(),
        "--traffic".as_ref(),
        traffic.as_os_str(),
        "--pidfile".as_ref(),
        pidfile.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        child.id().to_string()
    );

    let mut c = Client::connect(&socket);
    assert_eq!(c.read("backend/vif/5/0/bridge").unwrap(), "xenbr0");
    assert_eq!(
        c.read("/local/domain/0/backend/vif/5/0/ip").unwrap(),
        "10.0.0.2 10.0.0.3"
    );
    assert_eq!(
        c.read("/local/domain/0/backend/vif/5/0/odd").unwrap(),
        "a=b = c"
    );
    c.write("backend/vif/5/0/hotplug-status", "connected")
        .unwrap();
    c.write("/multi", "line1\nline2").unwrap();
    let tx = c.tx_start();
    c.tx_end(tx, false).unwrap();
    drop(c);

    // Each line is written as the request arrives, no flush needed.
    let log = std::fs::read_to_string(&traffic).unwrap();
    assert_eq!(
        log,
        "READ /local/domain/0/backend/vif/5/0/bridge\n\
         READ /local/domain/0/backend/vif/5/0/ip\n\
         READ /local/domain/0/backend/vif/5/0/odd\n\
         WRITE /local/domain/0/backend/vif/5/0/hotplug-status connected\n\
         WRITE /multi line1\\nline2\n\
         TRANSACTION_START\n\
         TRANSACTION_END\n"
    );

    terminate(&mut child);
    assert!(!socket.exists(), "socket removed");
    assert!(!pidfile.exists(), "pidfile removed");
}

#[test]
fn help_and_bad_arguments() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--socket", "--init", "--traffic", "--pidfile"] {
        assert!(help.contains(flag), "{flag} in help");
    }

    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--socket is required");

    let dir = scratch("bin-bad-init");
    let init = dir.join("init");
    std::fs::write(&init, "relative/path=1\n").unwrap();
    let out = Command::new(BIN)
        .args(["--socket".as_ref(), dir.join("s").as_os_str()])
        .args(["--init".as_ref(), init.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not absolute"));
    assert!(!Path::new(&dir.join("s")).exists());
}

#[test]
fn sigint_stops_it_too() {
    let dir = scratch("bin-int");
    let socket = dir.join("socket");
    let mut child = spawn(&["--socket".as_ref(), socket.as_os_str()]);
    Client::connect(&socket).read("/tool").unwrap();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!socket.exists());
}
