//! `vxrouter-lab`: the lab, a program of its own that uses vxrouter as a
//! library. `vxrouter lab VERB …` runs it with the same arguments; it runs
//! `vxrouter apply` inside each simulated host. The hidden `__…` commands are
//! what it runs inside its own nodes.

mod agent;
mod checks;
mod checks6;
mod frr;
mod guest;
mod ha;
mod interrupt;
mod lab;
mod libvirt;
mod nodes;
mod probe;
mod spec;
mod vm;

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
    /// The internet server of the HA cells: UDP echo + TCP conversations.
    Serve {
        addr: std::net::SocketAddr,
    },
    /// A fixed-schedule UDP prober (see probe.rs).
    Probe {
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Stop after this many seconds (default: when stdin closes).
        #[arg(long)]
        seconds: Option<f64>,
        #[arg(long, default_value_t = 100)]
        within_ms: u64,
    },
    /// The VM's end of a TCP conversation (see probe.rs).
    Talk {
        addr: std::net::SocketAddr,
        #[arg(long, value_enum)]
        mode: probe::Talk,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        #[arg(long, default_value_t = 5)]
        bye_wait: u64,
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
        Hidden::Agent(AgentCommand::Serve { addr }) => probe::serve(addr),
        Hidden::Agent(AgentCommand::Probe { addr, interval_ms, seconds, within_ms }) => probe::probe(
            addr,
            Duration::from_millis(interval_ms),
            seconds.map(Duration::from_secs_f64),
            Duration::from_millis(within_ms),
        ),
        Hidden::Agent(AgentCommand::Talk { addr, mode, interval_ms, bye_wait }) => {
            probe::talk(addr, mode, Duration::from_millis(interval_ms), Duration::from_secs(bye_wait))
        }
    })
}

fn run(cmd: &LabCommand, g: &Global) -> anyhow::Result<u8> {
    // --json where it means nothing is a usage error (64), as in vxrouter
    // itself: a script that asked for JSON must not get text and exit 0.
    let verb = match cmd {
        LabCommand::Up { .. } => Some("up"),
        LabCommand::Exec { .. } => Some("exec"),
        LabCommand::Down { .. } => Some("down"),
        _ => None,
    };
    if let (true, Some(verb)) = (g.json, verb) {
        eprintln!("error: --json means nothing to `vxrouter lab {verb}` (it has: lab check, lab run, lab status)");
        return Ok(64);
    }
    match cmd {
        LabCommand::Up { lab: file, no_apply } => {
            let l = lab::load(file)?;
            interrupt::catch()?;
            let built = lab::up(&l, &lab::UpOptions { apply: !no_apply, quiet: g.quiet });
            let state = match built {
                Ok(s) => s,
                Err(e) => {
                    if let Some(code) = interrupted(&l.name, &e, g.quiet) {
                        return Ok(code);
                    }
                    // A failed `up` leaves what it built for `lab check` and `lab down`.
                    nodes::release_detached();
                    return Err(e);
                }
            };
            nodes::release_detached();
            // The lab stays up either way, so `lab check` can show the cells.
            let failed = state.hosts.iter().chain(&state.vms).filter(|n| !n.ok).count();
            if failed > 0 {
                eprintln!("error: {failed} host(s) or VM(s) of lab {} did not come up as their profiles say (see above)", l.name);
                return Ok(1);
            }
            Ok(0)
        }
        LabCommand::Check { lab: file } => {
            let l = lab::resolve(file)?;
            interrupt::catch()?;
            match lab::check(&l, g.json) {
                Err(e) if interrupt::of(&e).is_some() => Ok(128 + interrupt::of(&e).unwrap_or(2) as u8),
                r => r,
            }
        }
        LabCommand::Exec { lab: file, node, command } => {
            let code = lab::exec(&lab::resolve(file)?, node, command)?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        LabCommand::Down { lab: file } => {
            lab::down(&lab::name_for_down(file)?, g.quiet)?;
            Ok(0)
        }
        LabCommand::Run { lab: file } => {
            let l = lab::load(file)?;
            interrupt::catch()?;
            match lab::run(&l, g.json, g.quiet) {
                // run removed the lab already.
                Err(e) if interrupt::of(&e).is_some() => {
                    let sig = interrupt::of(&e).unwrap_or(2);
                    eprintln!("{}: lab {} removed", interrupt::Interrupted(sig), l.name);
                    Ok(128 + sig as u8)
                }
                r => r,
            }
        }
        LabCommand::Status => lab::status(g.json),
    }
}

/// An interrupted `up`: removes the lab, reaps what it started, and gives
/// the exit code (128 + signal). None when `e` is not an interruption.
fn interrupted(name: &str, e: &anyhow::Error, quiet: bool) -> Option<u8> {
    let sig = interrupt::of(e)?;
    let removed = lab::down(name, quiet);
    nodes::reap_detached();
    match removed {
        Ok(()) => eprintln!("{e}: lab {name} removed"),
        Err(d) => eprintln!("{e}; removing lab {name} failed: {d:#} (run `vxrouter lab down {name}`)"),
    }
    Some(128 + sig as u8)
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
