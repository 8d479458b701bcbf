//! The `vxrouter` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use vxrouter::engine::{self, Opts};
use vxrouter::lab;

/// Provision VXLAN segments and a NAT router namespace on KVM hosts from a
/// per-host TOML profile, over netlink.
#[derive(Parser)]
#[command(name = "vxrouter", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors and differences.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Seconds to wait for another vxrouter run on this host to finish.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    lock_timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Check a profile's syntax and rules without touching the host.
    Validate {
        profile: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Show what `apply` would do, one line per object.
    Plan {
        profile: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Converge the host to the profile.
    Apply {
        profile: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Exit 0 when the host matches the profile, 2 when it does not.
    Check {
        profile: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Simulate a multi-host deployment on this machine and check it.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Remove everything this profile's `apply` created.
    Destroy {
        profile: PathBuf,
        /// Also delete bridges that still have foreign ports (they are
        /// released, never deleted).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the lab and apply every host's profile inside its host.
    Up {
        lab: PathBuf,
        /// Build hosts, switch, internet and VMs without applying profiles.
        #[arg(long)]
        no_apply: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run the connectivity checks and print the matrix.
    Check {
        lab: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Run a command inside a simulated host or VM.
    Exec {
        lab: PathBuf,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove everything the lab made (also after a crashed `up`).
    Down {
        lab: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// up, check, down; exits with the result of check.
    Run {
        lab: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

/// Helpers the lab runs inside its nodes; not for people.
#[derive(Parser)]
#[command(name = "vxrouter")]
enum Hidden {
    #[command(name = "__lab-holder")]
    LabHolder { label: Option<String> },
    #[command(name = "__agent", subcommand)]
    Agent(AgentCommand),
    /// Gratuitous ARPs: "ifindex,mac,ip" each (see garp::announce_detached).
    #[command(name = "__garp")]
    Garp { frames: Vec<String> },
}

#[derive(Subcommand)]
enum AgentCommand {
    Listen {
        addr: std::net::SocketAddr,
    },
    VxlanInject {
        #[arg(long)]
        from: std::net::Ipv4Addr,
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long)]
        vni: u32,
        #[arg(long)]
        sender: std::net::Ipv4Addr,
        #[arg(long)]
        target: std::net::Ipv4Addr,
    },
    Send {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 64)]
        bytes: u64,
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

fn hidden() -> Option<ExitCode> {
    let first = std::env::args().nth(1)?;
    if !first.starts_with("__") {
        return None;
    }
    let result = match Hidden::parse() {
        Hidden::LabHolder { .. } => lab::nodes::holder_main(),
        Hidden::Garp { frames } => {
            let parsed: Vec<_> = frames.iter().filter_map(|f| vxrouter::garp::parse_frame_arg(f)).collect();
            vxrouter::garp::announce(None, &parsed)
        }
        Hidden::Agent(AgentCommand::Listen { addr }) => lab::agent::listen(addr),
        Hidden::Agent(AgentCommand::VxlanInject { from, to, vni, sender, target }) => {
            lab::agent::vxlan_inject(from, to, vni, sender, target)
        }
        Hidden::Agent(AgentCommand::Send { addr, bytes, timeout }) => lab::agent::send(addr, bytes, Duration::from_secs(timeout)),
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    })
}

fn lab_command(cmd: &LabCommand) -> anyhow::Result<u8> {
    match cmd {
        LabCommand::Up { lab, no_apply, common } => {
            let l = lab::load(lab)?;
            let state = lab::up(&l, &lab::UpOptions { apply: !no_apply, quiet: common.quiet })?;
            // The lab stays up either way, so `lab check` can show the cells.
            let failed = state.hosts.iter().chain(&state.vms).filter(|n| !n.ok).count();
            if failed > 0 {
                eprintln!("error: {failed} host(s) or VM(s) of lab {} did not come up as their profiles say (see above)", l.name);
                return Ok(1);
            }
            Ok(0)
        }
        LabCommand::Check { lab, common } => {
            let l = lab::load(lab)?;
            lab::check(&l, common.json)
        }
        LabCommand::Exec { lab, node, command } => {
            let l = lab::load(lab)?;
            let code = lab::exec(&l, node, command)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        LabCommand::Down { lab, common } => {
            let l = lab::load(lab)?;
            lab::down(&l.name, common.quiet)?;
            Ok(0)
        }
        LabCommand::Run { lab, common } => {
            let l = lab::load(lab)?;
            lab::run(&l, common.json, common.quiet)
        }
    }
}

fn opts(c: &Common, force: bool) -> Opts {
    Opts { json: c.json, quiet: c.quiet, lock_timeout: Duration::from_secs(c.lock_timeout), force }
}

fn main() -> ExitCode {
    if let Some(code) = hidden() {
        return code;
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { profile, common } => engine::validate(profile, &opts(common, false)),
        Command::Plan { profile, common } => engine::plan(profile, &opts(common, false)),
        Command::Apply { profile, common } => engine::apply(profile, &opts(common, false)),
        Command::Check { profile, common } => engine::check(profile, &opts(common, false)),
        Command::Destroy { profile, force, common } => engine::destroy(profile, &opts(common, *force)),
        Command::Lab(cmd) => lab_command(cmd),
    };
    vxrouter::testhooks::report();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
