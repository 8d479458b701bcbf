//! The command line, defined once: `main` parses it, `vxrouter man` and
//! `vxrouter completions` render it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

use crate::engine::{self, Opts};
use crate::error::{Error, Result};

const AFTER_HELP: &str = "\
Exit codes: 0 success (check: the host matches); 1 error, nothing changed (a
failed or interrupted apply or destroy is rolled back); 2 drift (check: the
host differs); 3 a failed run could not be rolled back completely, the host
needs attention; 64 usage error.

Profile keys, design and operations: docs/ in the source tree (README.md).";

/// Provision VXLAN segments and a NAT router namespace on KVM hosts from a
/// per-host TOML profile, over netlink.
#[derive(Parser)]
#[command(name = "vxrouter", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone, Debug)]
pub struct Global {
    /// Machine-readable JSON on standard output (validate, plan, apply, adopt, check, destroy, status,
    /// lab check, lab run, lab status).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and differences.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more: each phase and how long it took (on standard error).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Seconds to wait for another vxrouter run on this host to finish.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    pub lock_timeout: u64,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a profile's syntax and rules without touching the host.
    Validate { profile: PathBuf },
    /// Show what `apply` would do, one line per object.
    Plan {
        profile: PathBuf,
        /// What `adopt` would do: which hand-built objects it takes over,
        /// changes in place, or has to recreate.
        #[arg(long)]
        adopt: bool,
    },
    /// Converge the host to the profile.
    Apply {
        profile: PathBuf,
        /// Apply although another profile owns this host name (it is
        /// replaced: what it created and this profile does not name goes).
        #[arg(long)]
        take_over: bool,
        /// Keep the change only if `vxrouter confirm` (or Enter) comes
        /// within SECONDS; otherwise roll back to exactly what was there,
        /// also when the SSH session dies meanwhile.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        confirm: Option<u64>,
        /// Take over objects built by hand that the profile names (same as
        /// `vxrouter adopt`).
        #[arg(long)]
        adopt: bool,
    },
    /// Take over a host built by hand (the seed document's commands): the
    /// bridges, VXLAN links, namespace and veths the profile names are
    /// marked as vxrouter's and kept (with their MACs), attributes that
    /// differ are changed in place, what cannot change in place is
    /// recreated (`plan --adopt` says which), and hand-written NAT rules
    /// in the router namespace are replaced by vxrouter's firewall.
    Adopt {
        profile: PathBuf,
        /// As for apply: roll back unless confirmed within SECONDS.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        confirm: Option<u64>,
    },
    /// Keep a change that `apply --confirm` is holding.
    Confirm {
        /// The host name, when several applies wait.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Exit 0 when the host matches the profile, 2 when it does not.
    Check { profile: PathBuf },
    /// Remove everything this profile's `apply` created.
    Destroy {
        /// The profile (or --host NAME without one).
        #[arg(required_unless_present = "host")]
        profile: Option<PathBuf>,
        /// Remove a host name's objects without its profile: found from the
        /// state file and the kernel (router namespaces marked with the
        /// name, its owned links, its rules; a physical NIC in one of its
        /// bridges is released).
        #[arg(long, conflicts_with = "profile", value_name = "NAME")]
        host: Option<String>,
        /// Also delete bridges that still have foreign ports (they are
        /// released, never deleted).
        #[arg(long)]
        force: bool,
        /// Destroy although another profile owns this host name.
        #[arg(long)]
        take_over: bool,
    },
    /// What is applied on this machine, per host name: profile, when,
    /// segments, router, daemons, drift (exit 2 when any drifted).
    Status,
    /// Router high availability ([router.ha]).
    #[command(subcommand)]
    Ha(HaCommand),
    /// Simulate a multi-host deployment on this machine and check it.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Print configuration for other tools (systemd, libvirt).
    #[command(subcommand)]
    Render(RenderCommand),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), generated from this command line.
    Man,
}

#[derive(Subcommand)]
pub enum HaCommand {
    /// Make the peer router active (planned: maintenance, upgrade): this
    /// router's VRRP priority drops to the lowest until the next `apply`;
    /// waits until the peer holds the addresses.
    Handover { profile: PathBuf },
}

#[derive(Subcommand)]
pub enum LabCommand {
    /// Build the lab and apply every host's profile inside its host.
    Up {
        lab: PathBuf,
        /// Build hosts, switch, internet and VMs without applying profiles.
        #[arg(long)]
        no_apply: bool,
    },
    /// Run the connectivity checks and print the matrix.
    Check {
        /// The lab file, or the name of a running lab.
        lab: PathBuf,
    },
    /// Run a command inside a simulated host or VM (a real guest: through
    /// its console).
    Exec {
        /// The lab file, or the name of a running lab.
        lab: PathBuf,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove everything the lab made (also after a crashed `up`).
    Down {
        /// The lab file, or the name of a running lab.
        lab: PathBuf,
    },
    /// up, check, down; exits with the result of check.
    Run { lab: PathBuf },
    /// List the labs that are up (name, state, file).
    #[command(visible_alias = "list")]
    Status,
}

#[derive(Subcommand)]
pub enum RenderCommand {
    /// The systemd unit template `vxrouter@.service` (applies
    /// /etc/vxrouter/NAME.toml at boot, again on `systemctl reload`).
    Systemd {
        /// Path of the vxrouter binary in ExecStart (default: this one).
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// One libvirt `<network>` per segment bridge of a profile.
    Libvirt {
        profile: PathBuf,
        /// Write NAME.xml files into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Helpers vxrouter runs itself; not for people.
#[derive(Parser)]
#[command(name = "vxrouter")]
enum Hidden {
    /// Gratuitous ARPs: "ifindex,mac,ip" each (see garp::announce_detached).
    #[command(name = "__garp")]
    Garp { frames: Vec<String> },
    /// What vxrouter sees on this host for a profile, as JSON (the
    /// `observed.json` of the golden plan tests in tests/plan/).
    #[command(name = "__observed")]
    Observed {
        profile: PathBuf,
        #[arg(long)]
        destroy: bool,
    },
}

fn hidden() -> Option<Result<()>> {
    let first = std::env::args().nth(1)?;
    if !first.starts_with("__") {
        return None;
    }
    Some(match Hidden::parse() {
        Hidden::Garp { frames } => {
            let parsed: Vec<_> = frames.iter().filter_map(|f| crate::garp::parse_frame_arg(f)).collect();
            crate::garp::announce(None, &parsed)
        }
        Hidden::Observed { profile, destroy } => engine::dump_observed(&profile, destroy),
    })
}

/// `vxrouter lab …` runs the lab, a program of its own (`vxrouter-lab`,
/// the workspace crate in lab/) found beside this binary or on PATH, with the
/// same arguments minus the word `lab`; it applies profiles with this binary.
fn lab() -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("vxrouter-lab");
    let program = if beside.exists() { beside } else { PathBuf::from("vxrouter-lab") };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "lab") {
        args.remove(i);
    }
    let err = std::process::Command::new(&program).args(&args).env("VXROUTER_BIN", &me).exec();
    Err(Error::from(err).context(format!(
        "run {} (the lab is a separate program: build it with `cargo build -p vxrouter-lab`)",
        program.display()
    )))
}

fn opts(g: &Global, force: bool, take_over: bool) -> Opts {
    Opts {
        json: g.json,
        quiet: g.quiet,
        verbose: g.verbose,
        lock_timeout: Duration::from_secs(g.lock_timeout),
        force,
        take_over,
        confirm: None,
        adopt: false,
    }
}

/// A global flag given to a command it means nothing to (`completions
/// bash --json`): refused as a usage error rather than silently ignored, so
/// a script learns at once that it gets no JSON.
fn meaningless_global(m: &clap::ArgMatches, c: &Command) -> Option<String> {
    use clap::parser::ValueSource;
    let given = |id: &str| {
        let sub = m.subcommand().map(|(_, s)| s);
        [Some(m), sub].into_iter().flatten().any(|x| x.value_source(id) == Some(ValueSource::CommandLine))
    };
    let name = m.subcommand_name().unwrap_or("");
    let json = matches!(
        c,
        Command::Validate { .. }
            | Command::Plan { .. }
            | Command::Apply { .. }
            | Command::Adopt { .. }
            | Command::Check { .. }
            | Command::Destroy { .. }
            | Command::Status
            | Command::Lab(_)
    );
    let locks = matches!(
        c,
        Command::Plan { .. }
            | Command::Apply { .. }
            | Command::Adopt { .. }
            | Command::Check { .. }
            | Command::Destroy { .. }
            | Command::Status
            | Command::Confirm { .. }
    );
    let talks = !matches!(c, Command::Completions { .. } | Command::Man | Command::Render(_));
    if given("json") && !json {
        return Some(format!("--json means nothing to `vxrouter {name}`"));
    }
    if given("lock_timeout") && !locks {
        return Some(format!("--lock-timeout means nothing to `vxrouter {name}` (it takes no lock)"));
    }
    if (given("quiet") || given("verbose")) && !talks {
        return Some(format!("-q/-v mean nothing to `vxrouter {name}` (it prints only its output)"));
    }
    None
}

/// Everything `main` does; returns the process exit code.
pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`vxrouter man | head`), instead of failing on EPIPE.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Some(result) = hidden() {
        return finish(result.map(|()| 0));
    }
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        use clap::FromArgMatches;
        let cli = Cli::from_arg_matches(&m)?;
        if let Some(msg) = meaningless_global(&m, &cli.command) {
            return Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg));
        }
        Ok(cli)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(crate::error::exit::USAGE),
            };
        }
    };
    let g = &cli.global;
    let result = match &cli.command {
        Command::Validate { profile } => engine::validate(profile, &opts(g, false, false)),
        Command::Plan { profile, adopt } => engine::plan(profile, &Opts { adopt: *adopt, ..opts(g, false, false) }),
        Command::Apply { profile, take_over, confirm, adopt } => {
            engine::apply(profile, &Opts { confirm: *confirm, adopt: *adopt, ..opts(g, false, *take_over) })
        }
        Command::Adopt { profile, confirm } => {
            engine::apply(profile, &Opts { confirm: *confirm, adopt: true, ..opts(g, false, false) })
        }
        Command::Confirm { host } => crate::confirm::confirm(&crate::state::run_dir(), host.as_deref()),
        Command::Check { profile } => engine::check(profile, &opts(g, false, false)),
        Command::Destroy { profile: Some(profile), force, take_over, .. } => {
            engine::destroy(profile, &opts(g, *force, *take_over))
        }
        Command::Destroy { host, force, .. } => engine::destroy_host(host.as_deref().unwrap_or_default(), &opts(g, *force, true)),
        Command::Status => engine::status(&opts(g, false, false)),
        Command::Ha(HaCommand::Handover { profile }) => engine::load(profile).and_then(|p| crate::ha::handover(&p, g.quiet)),
        Command::Lab(_) => lab(),
        Command::Render(RenderCommand::Systemd { bin }) => crate::render::systemd(bin.as_deref()).map(|t| {
            print!("{t}");
            0
        }),
        Command::Render(RenderCommand::Libvirt { profile, out }) => crate::render::libvirt_command(profile, out.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "vxrouter", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => man(&mut std::io::stdout()).map(|()| 0),
    };
    crate::testhooks::report();
    finish(result)
}

fn finish(result: Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let hint = match e.kind() {
                crate::error::ErrorKind::Permission => "\n(vxrouter needs root (CAP_NET_ADMIN) for this)",
                _ => "",
            };
            crate::tell!("{}: {e}{hint}", crate::output::error_word());
            ExitCode::from(e.kind().exit_code())
        }
    }
}

/// The manual page, from the command definition (options, subcommands,
/// exit codes).
pub fn man(out: &mut dyn std::io::Write) -> Result<()> {
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    // The commands, each with its arguments, on this one page (clap_mangen
    // would refer to a page per command, which nothing installs).
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help") {
        let args: Vec<String> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .map(|a| match a.get_long() {
                Some(l) => format!("[\\-\\-{}]", roff(l)),
                None => roff(&a.get_id().to_string().to_uppercase()),
            })
            .collect();
        let more = if sub.has_subcommands() { " \\fICOMMAND\\fR" } else { "" };
        writeln!(out, ".TP\n\\fBvxrouter {}\\fR{more} {}", sub.get_name(), args.join(" "))?;
        writeln!(out, "{}", roff(&sub.get_about().map(|a| a.to_string()).unwrap_or_default()))?;
        for a in sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_long().is_some()) {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            writeln!(out, ".RS\n.TP\n\\fB\\-\\-{}\\fR\n{}\n.RE", roff(a.get_long().unwrap_or_default()), roff(&help))?;
        }
        for c in sub.get_subcommands().filter(|c| c.get_name() != "help") {
            let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
            writeln!(out, ".RS\n.TP\n\\fB{} {}\\fR\n{}\n.RE", sub.get_name(), c.get_name(), roff(&about))?;
        }
    }
    writeln!(
        out,
        ".SH EXIT STATUS\nExit codes: 0 success (check: the host matches); 1 error, nothing changed (a failed or interrupted apply or destroy is rolled back); \
         2 drift (check, status: the host differs); 3 a failed run could not be rolled back completely and the host needs attention; 64 usage error."
    )?;
    writeln!(
        out,
        ".SH FILES\n.TP\n\\fI/etc/vxrouter/NAME.toml\\fR\nprofiles applied at boot by the \\fBvxrouter@NAME\\fR systemd unit.\n\
         .TP\n\\fI/run/vxrouter/HOST.state.json\\fR\nwhat vxrouter created for a host name (rebuilt from the kernel when lost).\n\
         .TP\n\\fI/run/vxrouter/lock\\fR\nthe host lock: one run that changes the host at a time.\n\
         .TP\n\\fI/run/vxrouter/dnsmasq/HOST/\\fR\nconfigurations, pid and lease files of the dnsmasq instances vxrouter runs."
    )?;
    writeln!(
        out,
        ".SH EXAMPLES\n.nf\nvxrouter validate /etc/vxrouter/host\\-a.toml\nvxrouter plan /etc/vxrouter/host\\-a.toml\n\
         vxrouter apply /etc/vxrouter/host\\-a.toml\nvxrouter check \\-\\-json /etc/vxrouter/host\\-a.toml\nvxrouter status\n\
         vxrouter destroy /etc/vxrouter/host\\-a.toml\n.fi"
    )?;
    writeln!(
        out,
        ".SH SEE ALSO\nThe profile reference, design, security and operations notes: \\fI/usr/share/doc/vxrouter/\\fR \
         (docs/ in the source tree). \\fBip\\fR(8), \\fBnft\\fR(8), \\fBiptables\\fR(8), \\fBdnsmasq\\fR(8)."
    )?;
    page.render_version_section(out)?;
    Ok(())
}

/// Text for roff: backslashes and hyphens escaped, no line starting with a
/// control character.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    t.lines()
        .map(|l| if l.starts_with('.') || l.starts_with('\'') { format!("\\&{l}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}
