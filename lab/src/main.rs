//! `vxrouter-lab`: the lab, a program of its own that uses vxrouter as a
//! library. `vxrouter lab VERB …` runs it with the same arguments; it runs
//! `vxrouter apply` inside each simulated host. The hidden `__…` commands are
//! what it runs inside its own nodes.

mod agent;
mod checks;
mod lab;
mod nodes;
mod spec;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vxrouter::cli::{Global, LabCommand};

/// Simulate a multi-host vxrouter deployment on this machine and check it.
#[derive(Parser)]
#[command(name = "vxrouter-lab", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: LabCommand,
}

/// Helpers the lab runs inside its nodes; not for people.
#[derive(Parser)]
#[command(name = "vxrouter-lab")]
enum Hidden {
    #[command(name = "__lab-holder")]
    LabHolder { label: Option<String> },
    #[command(name = "__agent", subcommand)]
    Agent(AgentCommand),
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

fn hidden() -> Option<anyhow::Result<()>> {
    let first = std::env::args().nth(1)?;
    if !first.starts_with("__") {
        return None;
    }
    Some(match Hidden::parse() {
        Hidden::LabHolder { .. } => nodes::holder_main(),
        Hidden::Agent(AgentCommand::Listen { addr }) => agent::listen(addr),
        Hidden::Agent(AgentCommand::VxlanInject { from, to, vni, sender, target }) => {
            agent::vxlan_inject(from, to, vni, sender, target)
        }
        Hidden::Agent(AgentCommand::Send { addr, bytes, timeout }) => agent::send(addr, bytes, Duration::from_secs(timeout)),
    })
}

fn run(cmd: &LabCommand, g: &Global) -> anyhow::Result<u8> {
    match cmd {
        LabCommand::Up { lab: file, no_apply } => {
            let l = lab::load(file)?;
            let state = lab::up(&l, &lab::UpOptions { apply: !no_apply, quiet: g.quiet })?;
            // The lab stays up either way, so `lab check` can show the cells.
            let failed = state.hosts.iter().chain(&state.vms).filter(|n| !n.ok).count();
            if failed > 0 {
                eprintln!("error: {failed} host(s) or VM(s) of lab {} did not come up as their profiles say (see above)", l.name);
                return Ok(1);
            }
            Ok(0)
        }
        LabCommand::Check { lab: file } => lab::check(&lab::load(file)?, g.json),
        LabCommand::Exec { lab: file, node, command } => {
            let code = lab::exec(&lab::load(file)?, node, command)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        LabCommand::Down { lab: file } => {
            lab::down(&lab::load(file)?.name, g.quiet)?;
            Ok(0)
        }
        LabCommand::Run { lab: file } => lab::run(&lab::load(file)?, g.json, g.quiet),
    }
}

fn main() -> ExitCode {
    // End quietly when the reader of our output goes away.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let result = match hidden() {
        Some(r) => r.map(|()| 0),
        None => {
            let cli = Cli::parse();
            run(&cli.command, &cli.global)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}: {e:#}", vxrouter::output::error_word());
            ExitCode::from(1)
        }
    }
}
