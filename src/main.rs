//! The `vxrouter` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use vxrouter::engine::{self, Opts};

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
    Validate { profile: PathBuf, #[command(flatten)] common: Common },
    /// Show what `apply` would do, one line per object.
    Plan { profile: PathBuf, #[command(flatten)] common: Common },
    /// Converge the host to the profile.
    Apply { profile: PathBuf, #[command(flatten)] common: Common },
    /// Exit 0 when the host matches the profile, 2 when it does not.
    Check { profile: PathBuf, #[command(flatten)] common: Common },
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

fn opts(c: &Common, force: bool) -> Opts {
    Opts { json: c.json, quiet: c.quiet, lock_timeout: Duration::from_secs(c.lock_timeout), force }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { profile, common } => engine::validate(profile, &opts(common, false)),
        Command::Plan { profile, common } => engine::plan(profile, &opts(common, false)),
        Command::Apply { profile, common } => engine::apply(profile, &opts(common, false)),
        Command::Check { profile, common } => engine::check(profile, &opts(common, false)),
        Command::Destroy { profile, force, common } => engine::destroy(profile, &opts(common, *force)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
