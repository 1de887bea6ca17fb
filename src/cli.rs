//! `xen-vif` as a command for administrators: the hotplug actions by domain and device,
//! a dry run, and the picture of every vif.

use clap::{Parser, Subcommand, ValueEnum};

use std::io::Write;

use crate::hotplug::{self, Env};
use crate::invocation::{Call, Command, Mode, Personality, TypeIf, Words};
use crate::log;
use crate::status;
use crate::{config, docs};

#[derive(Parser, Debug)]
#[command(
    name = "xen-vif",
    version,
    about = "Xen vif hotplug scripts as one static binary",
    long_about = "Xen vif hotplug scripts as one static binary.\n\n\
        Installed as vif-bridge, vif-route, vif-setup, network-bridge or network-route \
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
}

#[derive(Subcommand, Debug)]
pub enum Generate {
    /// The manual page xen-vif(1), in roff.
    Man,
    /// Completions for SHELL.
    Completions { shell: clap_complete::Shell },
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
        None => status::backend_mode(&backend).map_err(|e| format!("{e:#}"))?,
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
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let verbose = cli.verbose || std::env::var("XEN_VIF_LOG").is_ok_and(|v| v == "debug");
    log::init(Personality::Cli.name(), verbose, false);
    match cli.command {
        Cmd::Add(a) => device(&a, true),
        Cmd::Remove(a) => device(&a, false),
        Cmd::Status { json } => match status::run(json) {
            Ok(()) => 0,
            Err(e) => {
                log::error(&format!("status: {e:#}"));
                1
            }
        },
        Cmd::CheckConfig { file } => check_config(file.as_deref()),
        Cmd::Generate { what } => generate(what),
    }
}

fn check_config(file: Option<&std::path::Path>) -> i32 {
    let path = file.unwrap_or(std::path::Path::new(config::PATH));
    match config::load_from(path) {
        Ok(cfg) => {
            if !path.exists() {
                println!("{}: absent (stock behaviour)", path.display());
            }
            println!("{}", config::describe(&cfg));
            0
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            1
        }
    }
}

fn generate(what: Generate) -> i32 {
    let mut out = std::io::stdout().lock();
    let written = match what {
        Generate::Man => docs::man_page().and_then(|page| Ok(out.write_all(&page)?)),
        Generate::Completions { shell } => {
            docs::completions(shell, &mut out);
            Ok(())
        }
    };
    match written.and_then(|()| Ok(out.flush()?)) {
        Ok(()) => 0,
        Err(e) => {
            log::error(&format!("generate: {e:#}"));
            1
        }
    }
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
    let env: Env = &env_fn;
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
