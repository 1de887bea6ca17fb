//! A private Open vSwitch per test: its own ovsdb-server and ovs-vswitchd inside the sandbox's
//! network namespace, with every OVS directory (run, db, log) in a temporary directory, bridges
//! on the userspace datapath (`datapath_type=netdev`: no openvswitch kernel module needed).
//! Both daemons are killed when the value drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Sandbox, have_tool, require};

pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub struct Ovs {
    pub dir: PathBuf,
    ns: String,
    daemons: Vec<Child>,
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
    }
}

impl Ovs {
    /// Start Open vSwitch for `sb`, or None (locally) when it is not installed.
    pub fn start(sb: &Sandbox) -> Option<Ovs> {
        let tools = ["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl"];
        let have = tools.iter().all(|t| have_tool(t)) && std::path::Path::new(SCHEMA).exists();
        if !require(
            have,
            "Open vSwitch (openvswitch-switch: ovsdb-server, ovs-vswitchd)",
        ) {
            return None;
        }
        let dir = sb.dir.join("ovs");
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        let st = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(SCHEMA)
            .status()
            .unwrap();
        assert!(st.success(), "ovsdb-tool create");
        let mut ovs = Ovs {
            dir: dir.clone(),
            ns: sb.ns.clone(),
            daemons: Vec::new(),
        };
        let d = dir.display();
        let server = ovs.spawn(&[
            "ovsdb-server",
            &db.display().to_string(),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("--log-file={d}/ovsdb-server.log"),
            "--no-chdir",
        ]);
        ovs.daemons.push(server);
        let sock = dir.join("db.sock");
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "ovsdb-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ovs.vsctl(&["--no-wait", "init"]);
        let switch = ovs.spawn(&[
            "ovs-vswitchd",
            &format!("unix:{d}/db.sock"),
            &format!("--unixctl={d}/ovs-vswitchd.ctl"),
            &format!("--log-file={d}/ovs-vswitchd.log"),
            "--no-chdir",
        ]);
        ovs.daemons.push(switch);
        Some(ovs)
    }

    fn spawn(&self, argv: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv)
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Kill ovs-vswitchd (the database stays): changes are stored and never applied.
    pub fn kill_switch(&mut self) {
        if let Some(mut switch) = self.daemons.pop() {
            let _ = switch.kill();
            let _ = switch.wait();
        }
    }

    /// The environment that points OVS tools (and xen-vif) at this instance.
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.display().to_string();
        vec![
            ("OVS_RUNDIR".into(), d.clone()),
            ("OVS_DBDIR".into(), d.clone()),
            ("OVS_LOGDIR".into(), d.clone()),
            ("OVS_SYSCONFDIR".into(), d),
            ("OVS_PKGDATADIR".into(), "/usr/share/openvswitch".into()),
        ]
    }

    /// `ovs-vsctl ARGS` against this instance (test set-up and assertions only); must succeed.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.vsctl_try(args);
        assert!(ok, "ovs-vsctl {args:?}: {err}");
        out
    }

    pub fn vsctl_try(&self, args: &[&str]) -> (bool, String, String) {
        let o = Command::new("ovs-vsctl")
            .arg("--timeout=20")
            .args(args)
            .envs(self.env())
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// A bridge on the userspace datapath, its internal port up in the namespace.
    pub fn add_bridge(&self, sb: &Sandbox, name: &str) {
        self.vsctl(&[
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ]);
        sb.ip(&format!("link set {name} up"));
    }

    /// `ovs-vsctl get TABLE RECORD COLUMN`, or None when the record does not exist.
    pub fn get(&self, table: &str, record: &str, column: &str) -> Option<String> {
        let (ok, out, _) = self.vsctl_try(&["get", table, record, column]);
        ok.then_some(out)
    }

    /// The ports of `bridge`.
    pub fn ports(&self, bridge: &str) -> Vec<String> {
        self.vsctl(&["list-ports", bridge])
            .lines()
            .map(String::from)
            .collect()
    }
}
