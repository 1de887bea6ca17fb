//! `xen-vif` as a command for administrators: the hotplug actions by domain and device,
//! a dry run, and the picture of every vif.

use clap::CommandFactory;
use clap::{Parser, Subcommand, ValueEnum};

use crate::hotplug::{self, Env};
use crate::invocation::{self, Call, Command, Mode, Personality, TypeIf, Words};
use crate::log;
use crate::network_script::{self, Action, Script};
use crate::status;
use crate::xenstore::XenStore;
use crate::{config, docs};

#[derive(Parser, Debug)]
#[command(
    name = "xen-vif",
    version,
    about = "Xen vif hotplug scripts as one static binary",
    long_about = "Xen vif hotplug scripts as one static binary.\n\n\
        Installed as vif-bridge, vif-route, vif-nat, vif-setup, network-bridge, network-route or network-nat \
        (a symlink or copy under that name), it behaves as that Xen script. \
        Invoked as xen-vif, it offers the commands below."
)]
pub struct Cli {
    /// Log debug detail to stderr and syslog (also: XEN_VIF_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Bridge,
    Route,
    Nat,
    Openvswitch,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Do what `online` does for a backend, reading everything from xenstore.
    Add(DeviceArgs),
    /// Do what `offline` does for a backend.
    Remove(DeviceArgs),
    /// Show every vif in xenstore with its device, mode, bridge, MTU, link state,
    /// hotplug-status, and what differs between xenstore and the kernel.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stay resident and do the vif hotplug actions for every backend of this domain
    /// (run_hotplug_scripts=0 in /etc/xen/xl.conf), without starting a process per action.
    #[command(
        long_about = "Stay resident (in the foreground) and do the vif hotplug actions \
        for every backend of this domain, without starting a process per action.\n\n\
        For run_hotplug_scripts=0 in /etc/xen/xl.conf: libxl then runs no script and netback \
        waits for hotplug-status=connected. The daemon watches backend/vif, brings a backend \
        up when its state reaches InitWait with online=1 and takes it down when libxl removes \
        it (online=0, state Closing, or the directory gone), exactly as vif-setup online and \
        offline would; in a driver domain it then removes the closed backend's directory, as \
        xl devd does. An HVM guest's emulated NIC (the tap vifD.N-emu) is added and removed \
        from the kernel's uevents. Nothing is done while libxl runs the scripts itself \
        (libxl/disable_udev). SIGTERM finishes the actions in flight and stops. \
        The systemd unit xen-vif.service runs it."
    )]
    Daemon {
        /// Backends acted on at the same time.
        #[arg(long, default_value_t = crate::daemon::DEFAULT_WORKERS,
              value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
    },
    /// Check /etc/xen/xen-vif.toml (or FILE) and print the settings in force.
    CheckConfig {
        /// A file to check instead (e.g. before installing it).
        file: Option<std::path::PathBuf>,
    },
    /// Write the manual page or shell completions to stdout (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
    /// Host network set-up, as xend's network-script: network-bridge, network-route, and the
    /// check of pre-built bridges.
    Network {
        #[command(subcommand)]
        command: NetworkCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum Generate {
    /// The manual page xen-vif(1), in roff.
    Man,
    /// Completions for SHELL.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// What `network-bridge` does: a bridge takes a NIC's place, or per-VLAN bridges on a trunk.
    #[command(after_help = "Parameters:\n  \
        netdev=ethX          the NIC (default: the device of the default route)\n  \
        bridge=NAME          the bridge's name (default: the NIC's; `null`: do nothing)\n  \
        trunk=eth1 vlans=4,100 [bridge_template=br%d]\n                       \
        an 802.1q device per VLAN (eth1.4) in its own bridge (br4)\n  \
        trunk=eth1 vlans=4,100 vlan_filtering=yes [bridge=xenbr0]\n                       \
        one VLAN-aware bridge, the trunk a tagged port\n  \
        force=yes            stop even with vifs still attached\n\n\
        Examples:\n  xen-vif network bridge start netdev=eth0\n  \
        xen-vif network bridge start trunk=eth1 vlans=4,100 --dry-run\n  \
        xen-vif network bridge stop netdev=eth0")]
    Bridge(ScriptArgs),
    /// What `network-route` does: forwarding, proxy ARP, and a dummy gateway device.
    #[command(after_help = "Parameters:\n  \
        netdev=DEV           the gateway device (default: dummy0 with gateway= or when it \
        exists, else the device of the default route)\n  \
        gateway=ADDR/LEN     an address for the gateway device (repeatable); the device is \
        created as a dummy link if missing\n\n\
        Examples:\n  xen-vif network route start netdev=dummy0 gateway=10.9.0.1/29\n  \
        xen-vif network route status netdev=dummy0")]
    Route(ScriptArgs),
    /// What `network-nat` does: masquerading of the NAT guests out of the uplink, forwarding.
    #[command(after_help = "Parameters:\n  \
        netdev=DEV           the uplink (default: the device of the default route)\n  \
        range=PREFIX,...     the guests' source addresses (default: 10.0.0.0/8)\n\n\
        Examples:\n  xen-vif network nat start netdev=eth0\n  \
        xen-vif network nat status netdev=eth0")]
    Nat(ScriptArgs),
    /// The host network named by `network_script` in /etc/xen/xen-vif.toml (what xend's
    /// `(network-script ...)` was), as xen-vif-network.service runs it at boot and shutdown;
    /// without that key, nothing.
    Host {
        /// start: build it (a no-op when built); stop: put the host back; status: show it.
        action: ActionArg,
        /// Print each planned change and make none.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check pre-built bridges (what `network-prebuilt start bridges=...` does): changes
    /// nothing; exit 1 with one line per bridge that is missing, not a bridge, or down.
    Check {
        /// The bridges the distro built (e.g. br4 br100).
        #[arg(required = true, value_name = "BRIDGE")]
        bridges: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActionArg {
    Start,
    Stop,
    Status,
}

#[derive(clap::Args, Debug)]
pub struct ScriptArgs {
    /// start: build (a no-op when already built); stop: put the host back exactly as before
    /// start; status: show the picture.
    pub action: ActionArg,
    /// Parameters as xend passes them to the script.
    #[arg(value_name = "KEY=VALUE", value_parser = key_value)]
    pub params: Vec<(String, String)>,
    /// Print each planned change and make none.
    #[arg(long)]
    pub dry_run: bool,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match invocation::key_value(s) {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(clap::Args, Debug)]
pub struct DeviceArgs {
    /// The guest's domain id.
    pub domid: u32,
    /// The device index (the N of vifD.N).
    pub devid: u32,
    /// Print each planned change and make none.
    #[arg(long)]
    pub dry_run: bool,
    /// The mode; default: from the backend's `script` key (vif-route → route), else bridge.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Act on the emulated NIC's tap (vifD.N-emu) instead of the netback vif.
    #[arg(long)]
    pub tap: bool,
}

fn device_call(a: &DeviceArgs, up: bool) -> Result<(Call, String), String> {
    let backend = format!("backend/vif/{}/{}", a.domid, a.devid);
    let mode = match a.mode {
        Some(ModeArg::Bridge) => Mode::Bridge,
        Some(ModeArg::Route) => Mode::Route,
        Some(ModeArg::Nat) => Mode::Nat,
        Some(ModeArg::Openvswitch) => Mode::Openvswitch,
        None => XenStore::open()
            .and_then(|store| invocation::backend_mode(&store, &backend))
            .map_err(|e| format!("{e:#}"))?,
    };
    let (command, type_if) = match (up, a.tap) {
        (true, false) => (Command::Online, TypeIf::Vif),
        (false, false) => (Command::Offline, TypeIf::Vif),
        (true, true) => (Command::Add, TypeIf::Tap),
        (false, true) => (Command::Remove, TypeIf::Tap),
    };
    Ok((
        Call {
            script: mode.script(),
            mode,
            command,
            type_if,
            words: Words::default(),
        },
        backend,
    ))
}

pub fn run(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return 1;
        }
        // --help, --version: output like any other, so a full disk is an error.
        Err(e) => {
            use std::io::IsTerminal;
            let text = if std::io::stdout().is_terminal() {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let what = match e.kind() {
                clap::error::ErrorKind::DisplayVersion => "--version",
                _ => "--help",
            };
            return finish(what, crate::output::print(text.as_bytes()));
        }
    };
    let verbose = cli.verbose || std::env::var("XEN_VIF_LOG").is_ok_and(|v| v == "debug");
    log::init(Personality::Cli.name(), verbose);
    match cli.command {
        Cmd::Add(a) => device(&a, true),
        Cmd::Remove(a) => device(&a, false),
        Cmd::Network { command } => network(command),
        Cmd::Status { json } => match status::run(json) {
            Ok(()) => 0,
            Err(e) => {
                log::error(&format!("status: {e:#}"));
                1
            }
        },
        Cmd::CheckConfig { file } => check_config(file.as_deref()),
        Cmd::Daemon { workers } => crate::daemon::run(&crate::daemon::Options {
            workers: workers.into(),
        }),
        Cmd::Generate { what } => generate(what),
    }
}

fn check_config(file: Option<&std::path::Path>) -> i32 {
    let path = file.unwrap_or(std::path::Path::new(config::PATH));
    match config::load_from(path) {
        Ok(cfg) => {
            let mut text = String::new();
            if !path.exists() {
                text.push_str(&format!("{}: absent (stock behaviour)\n", path.display()));
            }
            text.push_str(&format!("{}\n", config::describe(&cfg)));
            finish("check-config", crate::output::print(text.as_bytes()))
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            1
        }
    }
}

fn generate(what: Generate) -> i32 {
    // Rendered in memory first: clap_complete panics on a failed write.
    let text = match what {
        Generate::Man => docs::man_page(Cli::command()),
        Generate::Completions { shell } => {
            let mut buf = Vec::new();
            docs::completions(Cli::command(), shell, &mut buf);
            Ok(buf)
        }
    };
    match text {
        Ok(t) => finish("generate", crate::output::print(&t)),
        Err(e) => {
            log::error(&format!("generate: {e:#}"));
            1
        }
    }
}

/// The exit status of an output command whose only work left was writing (see `output`).
fn finish(what: &str, written: std::io::Result<()>) -> i32 {
    match written {
        Ok(()) => 0,
        Err(e) => {
            log::error(&format!("{what}: {e}"));
            1
        }
    }
}

fn network(cmd: NetworkCmd) -> i32 {
    let action = |a: ActionArg| match a {
        ActionArg::Start => Action::Start,
        ActionArg::Stop => Action::Stop,
        ActionArg::Status => Action::Status,
    };
    let (script, a) = match cmd {
        NetworkCmd::Host { action: a, dry_run } => {
            let cfg = match config::current() {
                Ok(c) => c,
                Err(e) => {
                    log::error(e);
                    return 1;
                }
            };
            let Some(n) = &cfg.network_script else {
                log::info(&format!(
                    "no network_script in {}: nothing to do",
                    config::PATH
                ));
                return 0;
            };
            return network_script::run(n.script, action(a), &n.vars, dry_run);
        }
        NetworkCmd::Bridge(a) => (Script::Bridge, a),
        NetworkCmd::Route(a) => (Script::Route, a),
        NetworkCmd::Nat(a) => (Script::Nat, a),
        NetworkCmd::Check { bridges } => {
            let vars = vec![("bridges".to_string(), bridges.join(","))];
            return network_script::run(Script::Prebuilt, Action::Start, &vars, false);
        }
    };
    network_script::run(script, action(a.action), &a.params, a.dry_run)
}

fn device(a: &DeviceArgs, up: bool) -> i32 {
    let (call, backend) = match device_call(a, up) {
        Ok(c) => c,
        Err(e) => {
            log::error(&e);
            return 1;
        }
    };
    // The administrator's shell environment is not an input: only the backend path is.
    let env_fn = move |k: &str| (k == "XENBUS_PATH").then(|| backend.clone());
    let layered = hotplug::layered(&env_fn);
    let env: Env = &layered;
    match hotplug::execute(&call, env, a.dry_run) {
        Ok(()) => 0,
        Err(f) => {
            if a.dry_run {
                log::error(&f.message);
            } else {
                f.report();
            }
            1
        }
    }
}
