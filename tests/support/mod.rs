//! The test sandbox: a fresh network namespace per test, a test xenstored on a unix socket in a
//! fresh directory, veths standing in for netback's vifs, and the built binary run exactly as
//! libxl runs it (argv[0] = the script name, argv, environment).
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
pub use test_xenstored::{Daemon, Fault, FaultAction, Request};

pub mod ovs;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A store for loops that apply plans in the test process, timing the kernel's work alone:
/// reads find nothing, writes (the frontend's MTU) go nowhere.
pub struct NoStore;

impl xen_vif::xenstore::Store for NoStore {
    fn read(&self, _: &str) -> std::io::Result<Option<String>> {
        Ok(None)
    }
    fn write(&self, _: &str, _: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn directory(&self, _: &str) -> std::io::Result<Option<Vec<String>>> {
        Ok(None)
    }
}

/// The change a vif-bridge call for `vif<domid>.0` on xenbr0 asks for, as `hotplug` resolves
/// it: for loops that apply plans in the test process.
pub fn bridge_hotplug(
    domid: u32,
    command: xen_vif::invocation::Command,
    antispoof: bool,
    ip: &str,
    mac: [u8; 6],
) -> xen_vif::invocation::Hotplug {
    use xen_vif::ifname::IfName;
    use xen_vif::invocation::{DeviceId, Hotplug, Mode, TypeIf};
    let name = IfName::new(&format!("vif{domid}.0")).unwrap();
    Hotplug {
        script: "vif-bridge",
        mode: Mode::Bridge,
        command,
        type_if: TypeIf::Vif,
        id: DeviceId { domid, devid: 0 },
        backend: format!("backend/vif/{domid}/0"),
        kernel_name: name.clone(),
        wanted_name: name,
        bridge: Some(IfName::new("xenbr0").unwrap()),
        gatewaydev: None,
        ip: xen_vif::addr::parse_guest_addrs(ip).unwrap(),
        mtu: None,
        vlan: None,
        mac: Some(mac),
        antispoof,
        ovs_vlans: Default::default(),
    }
}

/// In CI every prerequisite is a hard requirement: nothing passes by skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (locally) or fail (in CI) when a prerequisite is missing.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("prerequisite missing in CI: {what}");
    }
    eprintln!("SKIPPED (not in CI): {what}");
    false
}

pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xen-vif"))
}

/// Another network namespace (a guest, a "world", a switch) beside a sandbox.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(sb: &Sandbox, tag: &str) -> Netns {
        let name = format!("{}-{tag}", sb.ns);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    pub fn ip(&self, args: &str) -> String {
        let o = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ip -n {} {args}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ping` from this namespace; true when any reply came back.
    pub fn ping(&self, dst: &str) -> bool {
        ping_in(&self.name, dst)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub struct Sandbox {
    pub ns: String,
    pub dir: PathBuf,
    pub xs: Daemon,
    ns_file: fs::File,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Sandbox {
    /// A fresh sandbox, or None (locally) when not root or without iproute2.
    pub fn new(tag: &str) -> Option<Sandbox> {
        if !require(
            nix::unistd::geteuid().is_root(),
            "root (network namespaces)",
        ) || !require(have_tool("ip"), "iproute2 (ip)")
        {
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = format!(
            "xvt-{}-{}-{n}",
            std::process::id(),
            &tag[..tag.len().min(20)]
        );
        let dir = std::env::temp_dir().join(&ns);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let scripts = xen_vif::invocation::Personality::SCRIPTS.map(|p| p.name());
        for script in scripts.iter().copied().chain(["xen-vif"]) {
            std::os::unix::fs::symlink(binary(), dir.join(script)).unwrap();
        }
        let st = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {ns}");
        let ns_file = fs::File::open(format!("/run/netns/{ns}")).unwrap();
        for d in ["etc", "etc-work", "varlog"] {
            fs::create_dir(dir.join(d)).unwrap();
        }
        let xs = Daemon::start(&dir.join("xenstored.sock")).unwrap();
        let sb = Sandbox {
            ns,
            dir,
            xs,
            ns_file,
        };
        sb.ip("link set lo up");
        Some(sb)
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &str) -> String {
        let (ok, out) = self.ip_try(args);
        assert!(ok, "ip {args}: {out}");
        out
    }

    pub fn ip_try(&self, args: &str) -> (bool, String) {
        let o = Command::new("ip")
            .arg("-n")
            .arg(&self.ns)
            .args(args.split_whitespace())
            .output()
            .unwrap();
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&o.stderr));
        (o.status.success(), s)
    }

    /// Run a shell command inside the namespace (test setup only).
    pub fn sh(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// A veth standing in for netback's vif; its peer `peer` stays in this namespace (down).
    pub fn netback_vif(&self, name: &str, peer: &str) {
        self.ip(&format!("link add {name} type veth peer name {peer}"));
    }

    /// Move one end of a veth created here into `other`.
    pub fn move_to(&self, link: &str, other: &Netns) {
        self.ip(&format!("link set {link} netns {}", other.name));
    }

    /// Write a sysctl inside the sandbox (test set-up only).
    pub fn set_sysctl(&self, path: &str, value: &str) {
        let o = self.sh(&format!("echo {value} > {path}"));
        assert!(
            o.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// A bridge with a fixed MAC, as a bridge over a NIC has: an empty bridge's own MAC otherwise
    /// changes with its ports, which would hide real differences in snapshots.
    pub fn bridge(&self, name: &str) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        self.ip(&format!(
            "link add {name} address 02:00:00:00:{:02x}:{:02x} type bridge",
            (n >> 8) & 0xff,
            n & 0xff
        ));
        self.ip(&format!("link set {name} up"));
    }

    /// The backend directory as libxl writes it before running the script.
    pub fn backend(&self, domid: u32, devid: u32, extra: &[(&str, &str)]) -> String {
        let be = format!("/local/domain/0/backend/vif/{domid}/{devid}");
        let fe = format!("/local/domain/{domid}/device/vif/{devid}");
        for (k, v) in [
            ("frontend", fe.as_str()),
            ("frontend-id", &domid.to_string()),
            ("online", "1"),
            ("state", "2"),
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("mac", "00:16:3e:00:00:01"),
            ("handle", &devid.to_string()),
            ("type", "vif"),
            ("hotplug-status", ""),
        ] {
            self.xs.write(&format!("{be}/{k}"), v);
        }
        for (k, v) in extra {
            self.xs.write(&format!("{be}/{k}"), v);
        }
        self.xs.write(&format!("{fe}/backend-id"), "0");
        be
    }

    /// The environment libxl gives a vif script.
    pub fn libxl_env(&self, script: &str, domid: u32, devid: u32) -> Vec<(String, String)> {
        vec![
            ("script".into(), format!("/etc/xen/scripts/{script}")),
            ("XENBUS_TYPE".into(), "vif".into()),
            ("XENBUS_PATH".into(), format!("backend/vif/{domid}/{devid}")),
            ("XENBUS_BASE_PATH".into(), "backend".into()),
            ("netdev".into(), String::new()),
            ("vif".into(), format!("vif{domid}.{devid}")),
        ]
    }

    /// Run the binary as `script` inside the namespace, with exactly `env` (plus XENSTORED_PATH
    /// and PATH) and `args`.
    pub fn run(&self, script: &str, args: &[&str], env: &[(String, String)]) -> Output {
        self.script_command(&[], script, args, env)
            .output()
            .unwrap()
    }

    /// Like `run`, under a wrapper command (e.g. strace injecting a fault), which execs the
    /// script by its path so argv[0] stays the script name.
    pub fn run_wrapped(
        &self,
        wrapper: &[&str],
        script: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Output {
        self.script_command(wrapper, script, args, env)
            .output()
            .unwrap()
    }

    /// The command `run` runs (optionally under `wrapper`), for tests that need to start it
    /// without waiting or to add to it.
    pub fn script_command(
        &self,
        wrapper: &[&str],
        script: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> Command {
        let path = self.dir.join(script);
        let mut cmd = match wrapper.split_first() {
            None => self.command(&path),
            Some((w, rest)) => {
                let mut c = self.command(w);
                c.args(rest).arg(&path);
                c
            }
        };
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// `program` prepared to run like libxl runs a hotplug script: empty environment but for
    /// XENSTORED_PATH and PATH, cwd /, stdin /dev/null, inside this sandbox's network namespace,
    /// and in a private mount namespace where the host's Xen files cannot leak in or be
    /// written: /etc is an overlay whose changes land in `etc_dir()` (tests put
    /// /etc/xen/xen-vif.toml and vif-post.d hooks there), /var/log is `log_dir()` (empty: no
    /// /var/log/xen unless a test creates it).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::ffi::CString;
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("XENSTORED_PATH", self.xs.socket())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .current_dir("/")
            .stdin(std::process::Stdio::null());
        let fd = self.ns_file.as_fd().try_clone_to_owned().unwrap();
        let cstr = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // One overlay work directory per command: overlayfs must not share one between mounts
        // that exist at the same time (the concurrency tests run 32 at once).
        let work = self.dir.join(format!(
            "etc-work-{}",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&work).unwrap();
        let opts = CString::new(format!(
            "lowerdir=/etc,upperdir={},workdir={}",
            self.etc_dir().display(),
            work.display()
        ))
        .unwrap();
        let log_dir = cstr(&self.log_dir());
        // /run/xen-vif (device locks, network-script state) is the sandbox's own, too.
        fs::create_dir_all(self.run_dir()).unwrap();
        fs::create_dir_all("/run/xen-vif").unwrap();
        let run_dir = cstr(&self.run_dir());
        // SAFETY: setns(2), unshare(2) and mount(2) are async-signal-safe syscalls on the
        // child's own state; every string was built before the fork.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                let none = std::ptr::null();
                check(libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    c"overlay".as_ptr(),
                    c"/etc".as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    opts.as_ptr().cast(),
                ))?;
                check(libc::mount(
                    log_dir.as_ptr(),
                    c"/var/log".as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    run_dir.as_ptr(),
                    c"/run/xen-vif".as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))
            });
        }
        cmd
    }

    /// What the binary sees as /etc, on top of the host's (write /etc/xen/... here).
    pub fn etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// What the binary sees as /var/log.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("varlog")
    }

    /// `script online type_if=vif` as libxl runs it.
    pub fn online(&self, script: &str, domid: u32, devid: u32) -> Output {
        self.run(
            script,
            &["online", "type_if=vif"],
            &self.libxl_env(script, domid, devid),
        )
    }

    pub fn offline(&self, script: &str, domid: u32, devid: u32) -> Output {
        self.run(
            script,
            &["offline", "type_if=vif"],
            &self.libxl_env(script, domid, devid),
        )
    }

    /// `ip -j -d link show dev NAME`, or None.
    pub fn link(&self, name: &str) -> Option<Value> {
        let (ok, out) = self.ip_try(&format!("-j -d link show dev {name}"));
        if !ok {
            return None;
        }
        let v: Value = serde_json::from_str(&out).ok()?;
        v.as_array()?.first().cloned()
    }

    pub fn master(&self, name: &str) -> Option<String> {
        self.link(name)?
            .get("master")
            .and_then(Value::as_str)
            .map(String::from)
    }

    pub fn mtu(&self, name: &str) -> u64 {
        self.link(name).unwrap()["mtu"].as_u64().unwrap()
    }

    pub fn is_up(&self, name: &str) -> bool {
        self.link(name).unwrap()["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    }

    pub fn mac(&self, name: &str) -> String {
        self.link(name).unwrap()["address"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Addresses on a link as "ip/len" strings (IPv6 link-local left out).
    pub fn addrs(&self, name: &str) -> Vec<String> {
        let out = self.ip(&format!("-j addr show dev {name}"));
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut r = Vec::new();
        for l in v.as_array().unwrap() {
            for a in l["addr_info"].as_array().unwrap() {
                let ip = a["local"].as_str().unwrap();
                if ip.starts_with("fe80") {
                    continue;
                }
                r.push(format!("{ip}/{}", a["prefixlen"]));
            }
        }
        r
    }

    pub fn sysctl(&self, path: &str) -> String {
        let o = self.sh(&format!("cat {path}"));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// A normalised picture of links, addresses, routes and neighbours: equal snapshots mean
    /// the host's network state is the same.
    pub fn snapshot(&self) -> String {
        let mut parts = BTreeMap::new();
        let links: Value = serde_json::from_str(&self.ip("-j -d link show")).unwrap();
        let mut ls = Vec::new();
        for l in links.as_array().unwrap() {
            let flags: Vec<String> = l["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .filter(|f| f != "LOWER_UP" && f != "NO-CARRIER" && f != "M-DOWN")
                .collect();
            ls.push(format!(
                "{} kind={} master={} mtu={} mac={} flags={}",
                l["ifname"].as_str().unwrap(),
                l["linkinfo"]["info_kind"].as_str().unwrap_or("-"),
                l["master"].as_str().unwrap_or("-"),
                l["mtu"],
                l["address"].as_str().unwrap_or("-"),
                flags.join(",")
            ));
        }
        ls.sort();
        parts.insert("links", ls.join("\n"));
        let addrs: Value = serde_json::from_str(&self.ip("-j addr show")).unwrap();
        let mut al = Vec::new();
        for l in addrs.as_array().unwrap() {
            for a in l["addr_info"].as_array().unwrap() {
                let ip = a["local"].as_str().unwrap();
                if ip.starts_with("fe80") {
                    continue;
                }
                al.push(format!(
                    "{} {ip}/{} scope={} brd={}",
                    l["ifname"].as_str().unwrap(),
                    a["prefixlen"],
                    a["scope"].as_str().unwrap_or("-"),
                    a["broadcast"].as_str().unwrap_or("-")
                ));
            }
        }
        al.sort();
        parts.insert("addrs", al.join("\n"));
        for (key, fam) in [("routes4", "-4"), ("routes6", "-6")] {
            let out = self.ip(&format!("{fam} route show table all"));
            let mut rl: Vec<String> = out
                .lines()
                .filter(|l| !l.contains("fe80::") && !l.starts_with("multicast"))
                .map(String::from)
                .collect();
            rl.sort();
            parts.insert(key, rl.join("\n"));
        }
        let out = self.ip("neigh show proxy");
        parts.insert("proxy", out);
        parts
            .iter()
            .map(|(k, v)| format!("[{k}]\n{v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// From now on the test xenstored answers `op` requests under `prefix` with `action`
    /// (instead of any fault set before).
    pub fn fault(&self, op: &str, prefix: &str, action: FaultAction) {
        self.xs.clear_faults();
        self.xs.inject(Fault {
            op: Some(op.into()),
            path_prefix: prefix.into(),
            action,
            times: None,
        });
    }
}

/// A guest's vif5.0 on xenbr0 as libxl sets it up before running the script, with `extra`
/// backend keys.
pub fn guest_on_xenbr0(tag: &str, extra: &[(&str, &str)]) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    sb.bridge("xenbr0");
    sb.netback_vif("vif5.0", "g5.0");
    let mut keys = vec![("bridge", "xenbr0")];
    keys.extend_from_slice(extra);
    sb.backend(5, 0, &keys);
    Some(sb)
}

/// `ping` from namespace `ns`; true when any reply came back. Patient enough for proxy NDP,
/// which the kernel answers after a random delay of up to 0.8 s.
fn ping_in(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "4", "-i", "0.3", "-W", "2", dst,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Sandbox {
    pub fn netns(&self, tag: &str) -> Netns {
        Netns::new(self, tag)
    }

    /// A veth `local` in this namespace and its peer `remote` in `other` (up there).
    pub fn veth_to(&self, local: &str, other: &Netns, remote: &str) {
        self.ip(&format!(
            "link add {local} type veth peer name {remote} netns {}",
            other.name
        ));
        other.ip(&format!("link set {remote} up"));
    }

    pub fn ping(&self, dst: &str) -> bool {
        ping_in(&self.ns, dst)
    }

    /// What the binary sees as /run/xen-vif (its locks, the network scripts' state).
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A network script (`network-bridge`, `network-route`, `network-prebuilt`, or `xen-vif`)
    /// as xend runs it.
    pub fn net(&self, script: &str, args: &[&str]) -> Output {
        self.run(script, args, &[])
    }

    /// Every state file under `run_dir()`.
    pub fn state_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "state") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.run_dir(), &mut out);
        out.sort();
        out
    }
}

/// Make `dir` the child's /dev (a bind mount in the private mount namespace `Sandbox::command`
/// gives it): e.g. a /dev/log socket the test controls.
pub fn dev_from(cmd: &mut Command, dir: &Path) {
    let src = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mount(2) is async-signal-safe; the string was built before the fork, and the
    // mount acts on the child's own mount namespace.
    unsafe {
        cmd.pre_exec(move || {
            let r = nix::libc::mount(
                src.as_ptr(),
                c"/dev".as_ptr(),
                std::ptr::null(),
                nix::libc::MS_BIND,
                std::ptr::null(),
            );
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A snapshot without the lines of one link (e.g. a port's MAC, which netback's device keeps).
pub fn without(snapshot: &str, link: &str) -> String {
    snapshot
        .lines()
        .filter(|l| !l.starts_with(&format!("{link} ")))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

#[track_caller]
pub fn assert_fails(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
