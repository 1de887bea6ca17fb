//! `test-xenstored`: the test xenstored as a process, for tests that run other
//! programs (Xen's C tools, shell scripts) against it.

use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use test_xenstored::{Daemon, Options};

const HELP: &str = "\
Usage: test-xenstored --socket PATH [--init FILE] [--traffic FILE] [--pidfile FILE]

A stand-in for xenstored for tests: speaks the xenstore wire protocol on a unix
socket, keeps the tree in memory, treats every client as domain 0.

  --socket PATH    listen here (point clients at it with XENSTORED_PATH=PATH)
  --init FILE      nodes to create first: lines PATH=VALUE (absolute path, split
                   at the first '='); blank lines and lines starting with # skipped
  --traffic FILE   append one line per request as it arrives: OP PATH[ VALUE]
  --pidfile FILE   write the daemon's pid here
  --help           show this text

Prints \"ready\" on stdout once listening. Serves until SIGTERM or SIGINT, then
removes the socket and the pidfile.
";

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

extern "C" fn request_stop(_signum: c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

struct Args {
    socket: PathBuf,
    init: Option<PathBuf>,
    traffic: Option<PathBuf>,
    pidfile: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut socket = None;
    let mut init = None;
    let mut traffic = None;
    let mut pidfile = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        let slot = match arg.as_str() {
            "--socket" => &mut socket,
            "--init" => &mut init,
            "--traffic" => &mut traffic,
            "--pidfile" => &mut pidfile,
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        *slot = Some(PathBuf::from(value));
    }
    let socket = socket.ok_or("--socket is required")?;
    Ok(Some(Args {
        socket,
        init,
        traffic,
        pidfile,
    }))
}

/// Lines `PATH=VALUE`; the value may hold spaces and further '='.
fn parse_init(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut nodes = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (path, value) = line
            .split_once('=')
            .ok_or(format!("line {}: expected PATH=VALUE", number + 1))?;
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!(
                "line {}: path {path:?} is not absolute",
                number + 1
            ));
        }
        nodes.push((path.to_string(), value.to_string()));
    }
    Ok(nodes)
}

fn run(args: Args) -> Result<(), String> {
    let mut options = Options::default();
    if let Some(init) = &args.init {
        let text =
            std::fs::read_to_string(init).map_err(|e| format!("read {}: {e}", init.display()))?;
        options.initial = parse_init(&text).map_err(|e| format!("{}: {e}", init.display()))?;
    }
    if let Some(traffic) = &args.traffic {
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(traffic)
            .map_err(|e| format!("open {}: {e}", traffic.display()))?;
        options.traffic_log = Some(file);
    }

    // SAFETY: the handler only stores to an atomic, which is async-signal-safe,
    // and lives for the whole program.
    unsafe {
        signal(SIGTERM, request_stop);
        signal(SIGINT, request_stop);
    }

    let daemon = Daemon::start_with(&args.socket, options)
        .map_err(|e| format!("listen on {}: {e}", args.socket.display()))?;
    if let Some(pidfile) = &args.pidfile {
        std::fs::write(pidfile, format!("{}\n", std::process::id()))
            .map_err(|e| format!("write {}: {e}", pidfile.display()))?;
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();

    // The daemon serves from its own threads; this one only waits for a signal.
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);
    if let Some(pidfile) = &args.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args() {
        Ok(None) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Some(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("test-xenstored: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("test-xenstored: {e}\n\n{HELP}");
            ExitCode::from(2)
        }
    }
}
