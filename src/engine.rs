//! The commands: observe → plan → (apply → verify), with locking and state.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::apply::Executor;
use crate::desired::{self, Desired};
use crate::firewall::{self, Backend};
use crate::lock::HostLock;
use crate::model::Ns;
use crate::observe::{self, Observed, Session, Wants};
use crate::output;
use crate::plan::{self, Action, Plan, PlanOptions, Verb};
use crate::preflight::{self, BRIDGE_NF_SYSCTL, IGMP_MAX_SYSCTL, IP_FORWARD_SYSCTL};
use crate::profile::FirewallChoice;
use crate::profile::{Profile, ProfileErrors};
use crate::state::{Pending, State};

/// Exit codes: 0 success, 1 error, 2 drift (check).
pub const EXIT_DRIFT: u8 = 2;

#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    pub json: bool,
    /// 1 and more: each phase and its duration on standard error.
    pub verbose: u8,
    pub quiet: bool,
    pub lock_timeout: Duration,
    pub force: bool,
}

pub fn load(path: &Path) -> Result<Profile> {
    Profile::load(path).map_err(|e: ProfileErrors| anyhow::Error::new(e))
}

/// Everything a command needs to decide: profile, state, kernel view.
pub struct World {
    pub session: Session,
    pub state: State,
    pub observed: Observed,
    pub desired: Desired,
    pub warnings: Vec<String>,
    /// The br_netfilter warning needs the host's iptables FORWARD policy:
    /// read by a thread alongside the rest of the run (an `iptables-save`
    /// costs a few milliseconds) when the host firewall was not read anyway.
    pending_warnings: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl World {
    /// All warnings, waiting for the ones still being worked out.
    fn take_warnings(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.warnings);
        if let Some(h) = self.pending_warnings.take() {
            w.extend(h.join().unwrap_or_default());
        }
        w
    }
}

fn lock(opts: &Opts) -> Result<HostLock> {
    let quiet = opts.quiet;
    let lock = HostLock::acquire(opts.lock_timeout, |holder| {
        if !quiet {
            eprintln!("waiting for {holder} to finish…");
        }
    })?;
    crate::testhooks::hold();
    Ok(lock)
}

/// Runs a command under the host lock. Afterwards, when this host has no
/// state left (never applied, rolled back, destroyed), the lock file goes
/// too, so an unused host keeps no vxrouter files.
fn locked(p: &Profile, opts: &Opts, f: fn(&Profile, &Opts) -> Result<u8>) -> Result<u8> {
    let lock = lock(opts)?;
    let result = f(p, opts);
    if State::load(&p.host).is_ok_and(|s| s.is_empty()) {
        lock.remove_files();
    }
    result
}

/// Reads the host: the profile's namespaces plus any this host created.
/// How much to read: everything (plan, check, apply), or what verification
/// after an apply needs. Verification does not re-read firewalls: each batch
/// was committed atomically by `iptables-restore` (a failure is an error
/// with rollback), and re-reading costs a process per namespace on every
/// apply; `check` reads them in full.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Full,
    Verify,
}

pub fn observe(
    p: &Profile,
    session: &mut Session,
    state: &State,
    desired_for: Option<&Profile>,
    depth: Depth,
) -> Result<(Observed, Desired, Vec<String>)> {
    let mut host = observe::read_ns(
        session,
        &Ns::Host,
        &Wants { sysctls: &[IP_FORWARD_SYSCTL, IGMP_MAX_SYSCTL, BRIDGE_NF_SYSCTL], firewall: &[] },
    )?;
    let (desired, warnings) = match desired_for {
        Some(p) => {
            let pf = preflight::check(p, &host);
            if !pf.errors.is_empty() {
                bail!("{}\nnothing was changed", pf.errors.join("\n"));
            }
            (desired::derive(p, pf.underlay.as_ref()), pf.warnings)
        }
        None => (empty_desired(p), vec![]),
    };
    // The host's bridge FDB and firewall are read only when this profile
    // uses them (unicast peers, underlay protection) or used them before.
    let mark = p.owner_mark();
    let unicast_before = host
        .links
        .iter()
        .any(|l| l.alias.as_deref() == Some(mark.as_str()) && l.vxlan.as_ref().is_some_and(|v| v.group.is_none()));
    if !desired.fdb.is_empty() || unicast_before {
        host.fdb = observe::read_fdb(session, &Ns::Host)?;
    }
    let full = depth == Depth::Full;
    let host_reads = fw_reads(&Ns::Host, &desired, state, depth);
    if !host_reads.is_empty() {
        host.firewall = Some(observe::read_firewall(None, "the host", &host_reads)?);
    }
    let mut warnings = warnings;
    if full {
        warnings.extend(preflight::host_firewall_warnings(&host));
    }
    let mut observed = Observed {
        host,
        netns: crate::netns::list()?.into_iter().collect(),
        state: state.clone(),
        dhcp: crate::dhcp::observe(&p.host)?,
        ..Observed::default()
    };
    let mut names: Vec<String> = state.namespaces.iter().cloned().collect();
    names.extend(state.pending.iter().flat_map(|p| p.namespaces.clone()));
    names.extend(desired.router_ns.clone());
    names.sort();
    names.dedup();
    for name in names {
        if session.attach(&name)? {
            let ns = Ns::Named(name.clone());
            let reads = fw_reads(&ns, &desired, state, depth);
            let view = observe::read_ns(session, &ns, &Wants { sysctls: &[IP_FORWARD_SYSCTL], firewall: &reads })?;
            observed.named.insert(name, view);
        } else if observed.netns.contains(&name) && (state.namespaces.contains(&name) || state.pending_namespace(&name)) {
            observed.netns.remove(&name);
            observed.stale_netns.insert(name);
        }
    }
    Ok((observed, desired, warnings))
}

/// The backend a firewall choice means on this machine.
pub fn backend(choice: FirewallChoice) -> Backend {
    firewall::resolve(choice, firewall::nft::available())
}

/// Which firewall backends to read in a namespace: the one its rules should
/// be in (skipped when verifying: see `Depth`), and every one vxrouter left
/// rules in before (a backend switch removes those).
fn fw_reads(ns: &Ns, desired: &Desired, state: &State, depth: Depth) -> Vec<Backend> {
    if depth == Depth::Verify && desired.firewall.iter().any(|(n, _, _)| n == ns) {
        return vec![];
    }
    let mut out: Vec<Backend> =
        state.firewall.get(&crate::state::fw_key(ns)).map(|s| s.iter().copied().collect()).unwrap_or_default();
    if depth == Depth::Full
        && let Some((_, _, choice)) = desired.firewall.iter().find(|(n, _, _)| n == ns)
    {
        out.push(backend(*choice));
    }
    out.sort();
    out.dedup();
    out
}

/// The desired state of `destroy`: nothing, under the same owner mark.
fn empty_desired(p: &Profile) -> Desired {
    Desired::nothing(&p.host, &p.owner_mark())
}

/// With -v, says how long a phase took (on standard error).
fn phase(opts: &Opts, what: &str, since: std::time::Instant) {
    if opts.verbose > 0 {
        eprintln!("vxrouter: {what} in {:.1} ms", since.elapsed().as_secs_f64() * 1000.0);
    }
}

/// `vxrouter __observed`: the observed state a plan would be computed from.
pub fn dump_observed(path: &Path, destroy: bool) -> Result<()> {
    let p = load(path)?;
    let _lock = lock(&Opts { lock_timeout: Duration::from_secs(60), quiet: true, ..Opts::default() })?;
    let mut session = Session::new()?;
    let state = State::load(&p.host)?;
    let (observed, _, _) = observe(&p, &mut session, &state, (!destroy).then_some(&p), Depth::Full)?;
    let mut doc = serde_json::to_value(&observed)?;
    doc["nft"] = serde_json::Value::Bool(firewall::nft::available());
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn world(p: &Profile, destroy: bool, opts: &Opts) -> Result<World> {
    let t = std::time::Instant::now();
    let mut session = Session::new()?;
    let state = State::load(&p.host)?;
    let (observed, desired, warnings) = observe(p, &mut session, &state, (!destroy).then_some(p), Depth::Full)?;
    let host_fw_read = observed.host.firewall.as_ref().is_some_and(|f| f.ipt.is_some());
    let pending_warnings =
        (!destroy && !host_fw_read && preflight::bridge_nf_on(&observed.host) && firewall::iptables::available()).then(|| {
            let mut host = crate::observe::NsView { sysctls: observed.host.sysctls.clone(), ..Default::default() };
            std::thread::spawn(move || match firewall::iptables::observe(None, "the host") {
                Ok(ipt) => {
                    host.firewall = Some(firewall::FirewallState { ipt: Some(ipt), nft: None });
                    preflight::host_firewall_warnings(&host)
                }
                Err(_) => vec![],
            })
        });
    let links: usize = observed.host.links.len() + observed.named.values().map(|v| v.links.len()).sum::<usize>();
    phase(opts, &format!("observed {} namespace(s), {links} link(s)", 1 + observed.named.len()), t);
    Ok(World { session, state, observed, desired, warnings, pending_warnings })
}

fn compute(w: &World, opts: &Opts) -> Result<Plan> {
    plan::plan(&w.desired, &w.observed, PlanOptions { force: opts.force, nft: firewall::nft::available() })
        .map_err(|c| anyhow::anyhow!("{c}\nnothing was changed"))
}

#[derive(Serialize)]
struct JsonAction<'a> {
    verb: Verb,
    object: String,
    detail: String,
    #[serde(flatten)]
    action: &'a Action,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    profile: &'a str,
    host: &'a str,
    changes: Vec<JsonAction<'a>>,
    notes: &'a [String],
    warnings: &'a [String],
}

fn print_plan(p: &Profile, plan: &Plan, warnings: &[String], opts: &Opts, empty_msg: &str) -> Result<()> {
    if opts.json {
        let changes = plan
            .actions
            .iter()
            .map(|a| JsonAction { verb: a.verb(), object: a.object(), detail: a.detail(), action: a })
            .collect();
        let doc = JsonPlan { profile: &p.source, host: &p.host, changes, notes: &plan.notes, warnings };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for w in warnings {
        eprintln!("{}: {w}", output::warning_word());
    }
    if plan.actions.is_empty() {
        if !opts.quiet {
            println!("{empty_msg}");
        }
    } else {
        for a in &plan.actions {
            println!("{}", painted_line(a));
        }
    }
    for n in &plan.notes {
        println!("note: {n}");
    }
    Ok(())
}

pub fn validate(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"profile": p.source, "valid": true, "parsed": p}))?);
    } else if !opts.quiet {
        println!("{}: valid", p.source);
    }
    Ok(0)
}

pub fn plan(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, plan_locked)
}

fn plan_locked(p: &Profile, opts: &Opts) -> Result<u8> {
    let mut w = world(p, false, opts)?;
    let plan = compute(&w, opts)?;
    let warnings = w.take_warnings();
    print_plan(p, &plan, &warnings, opts, "no changes: the host matches the profile")?;
    Ok(0)
}

pub fn check(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, check_locked)
}

fn check_locked(p: &Profile, opts: &Opts) -> Result<u8> {
    let mut w = world(p, false, opts)?;
    let plan = compute(&w, opts)?;
    let warnings = w.take_warnings();
    if opts.json {
        #[derive(Serialize)]
        struct Difference {
            status: &'static str,
            object: String,
            detail: String,
        }
        let diffs: Vec<Difference> =
            plan.actions.iter().map(|a| Difference { status: status(a), object: a.object(), detail: a.detail() }).collect();
        let doc = serde_json::json!({
            "profile": p.source, "host": p.host, "matches": diffs.is_empty(),
            "differences": diffs, "notes": plan.notes, "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for warn in &warnings {
            eprintln!("{}: {warn}", output::warning_word());
        }
        for a in &plan.actions {
            let d = a.detail();
            if d.is_empty() {
                println!("{}: {}", output::out(tone(a), status(a)), a.object());
            } else {
                println!("{}: {}: {d}", output::out(tone(a), status(a)), a.object());
            }
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        if plan.actions.is_empty() && !opts.quiet {
            println!("ok: the host matches {}", p.source);
        }
    }
    Ok(if plan.actions.is_empty() { 0 } else { EXIT_DRIFT })
}

fn tone(a: &Action) -> output::Tone {
    match a.verb() {
        Verb::Create => output::Tone::Good,
        Verb::Change | Verb::Recreate => output::Tone::Warn,
        Verb::Remove => output::Tone::Bad,
    }
}

/// A plan line with its verb coloured (on a terminal).
fn painted_line(a: &Action) -> String {
    let line = a.line();
    match line.split_once(' ') {
        Some((verb, rest)) => format!("{} {rest}", output::out(tone(a), verb)),
        None => line,
    }
}

fn status(a: &Action) -> &'static str {
    match a.verb() {
        Verb::Create => "missing",
        Verb::Change | Verb::Recreate => "different",
        Verb::Remove => "extra",
    }
}

/// Names a plan may create, recorded before it runs so that an interrupted
/// run's half-made objects are recognised as ours next time.
fn pending(plan: &Plan) -> Pending {
    let mut p = Pending { pid: std::process::id(), links: vec![], namespaces: vec![] };
    for a in &plan.actions {
        match a {
            Action::CreateNetns { name } => p.namespaces.push(name.clone()),
            Action::CreateLink { ns, spec, peer, .. } => {
                p.links.push((ns.clone(), spec.name.clone()));
                if let Some((pns, ps)) = peer {
                    p.links.push((pns.clone(), ps.name.clone()));
                }
            }
            _ => {}
        }
    }
    p
}

/// Executes a plan with state bookkeeping around it, then verifies.
fn execute(p: &Profile, mut w: World, plan: Plan, opts: &Opts, destroy: bool) -> Result<()> {
    let before = w.state.clone();
    let mut during = before.clone();
    during.host = p.host.clone();
    // Keep what an interrupted earlier run may have left unmarked: this run
    // may be killed too before it has adopted those objects.
    let mut pend = pending(&plan);
    if let Some(old) = &before.pending {
        pend.links.extend(old.links.iter().filter(|l| !pend.links.contains(l)).cloned().collect::<Vec<_>>());
        pend.namespaces.extend(old.namespaces.iter().filter(|n| !pend.namespaces.contains(n)).cloned().collect::<Vec<_>>());
    }
    during.pending = Some(pend);
    if let Some(ns) = &w.desired.router_ns {
        during.namespaces.insert(ns.clone());
    }
    for (u, b) in &w.desired.uplinks {
        during.uplinks.insert(u.clone(), b.clone());
    }
    for (ns, _, choice) in &w.desired.firewall {
        during.firewall.entry(crate::state::fw_key(ns)).or_default().insert(backend(*choice));
    }
    during.save()?;

    let quiet = opts.quiet || opts.json;
    let t = std::time::Instant::now();
    let mut exec = Executor::new(&mut w.session, &w.desired.mark, &w.desired.host);
    let verbose = opts.verbose;
    let mut last = std::time::Instant::now();
    let run = exec.run(&plan.actions, |a| {
        if !quiet {
            println!("{}", painted_line(a));
        }
        if verbose > 1 {
            eprintln!("vxrouter:   {:.2} ms  {}", last.elapsed().as_secs_f64() * 1000.0, a.title());
            last = std::time::Instant::now();
        }
    });
    let late_problems = std::mem::take(&mut exec.warnings);
    drop(exec);
    for warn in &late_problems {
        eprintln!("{}: {warn}", output::warning_word());
    }
    if let Err(e) = run {
        before.save().context("restore state file after rollback")?;
        return Err(e);
    }

    phase(opts, &format!("applied {} step(s)", plan.actions.len()), t);
    let t = std::time::Instant::now();
    // Verify: the host must now match exactly.
    let (observed, desired, _) = observe(p, &mut w.session, &during, (!destroy).then_some(p), Depth::Verify)?;
    let again = plan::plan(&desired, &observed, PlanOptions { force: opts.force, nft: firewall::nft::available() })
        .map_err(|c| anyhow::anyhow!("{c}"))?;
    phase(opts, "verified", t);
    let leftover: Vec<String> =
        again.actions.iter().filter(|a| !matches!(a, Action::Firewall { .. })).map(|a| a.line()).collect();

    let mut after = State { host: p.host.clone(), ..State::default() };
    if let Some(ns) = &desired.router_ns {
        after.namespaces.insert(ns.clone());
    }
    // Namespaces kept because they hold foreign objects stay recorded.
    for name in &during.namespaces {
        if observed.named.get(name).and_then(|v| v.loopback_mark()) == Some(desired.mark.as_str()) {
            after.namespaces.insert(name.clone());
        }
    }
    for (u, b) in &desired.uplinks {
        after.uplinks.insert(u.clone(), b.clone());
    }
    for (ns, policy, choice) in &desired.firewall {
        if !policy.chains.is_empty() {
            after.firewall.entry(crate::state::fw_key(ns)).or_default().insert(backend(*choice));
        }
    }
    // Kept namespaces keep their record (their rules were removed, but the
    // next run looks again).
    for name in &after.namespaces {
        if Some(name) != desired.router_ns.as_ref()
            && let Some(b) = during.firewall.get(name)
        {
            after.firewall.insert(name.clone(), b.clone());
        }
    }
    after.save()?;
    if !leftover.is_empty() {
        bail!("verification failed: after applying, these differences remain:\n  {}", leftover.join("\n  "));
    }
    Ok(())
}

pub fn apply(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, apply_locked)
}

fn apply_locked(p: &Profile, opts: &Opts) -> Result<u8> {
    let mut w = world(p, false, opts)?;
    let plan = compute(&w, opts)?;
    for warn in &w.warnings {
        eprintln!("{}: {warn}", output::warning_word());
    }
    // The slow warnings (host firewall) come when they are ready, after the
    // steps: they never hold an apply up.
    let late = w.pending_warnings.take();
    let print_late = move || {
        for warn in late.map(|h| h.join().unwrap_or_default()).unwrap_or_default() {
            eprintln!("{}: {warn}", output::warning_word());
        }
    };
    if plan.actions.is_empty() {
        print_late();
        // Still drop a stale `pending` left by an interrupted run.
        if w.state.pending.is_some() {
            let mut st = w.state.clone();
            st.pending = None;
            st.save()?;
        }
        if !opts.quiet {
            println!("nothing to do: the host already matches {}", p.source);
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        return Ok(0);
    }
    let notes = plan.notes.clone();
    let result = execute(p, w, plan, opts, false);
    print_late();
    result?;
    for n in &notes {
        println!("note: {n}");
    }
    if !opts.quiet {
        println!("applied {}", p.source);
    }
    Ok(0)
}

pub fn destroy(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, destroy_locked)
}

fn destroy_locked(p: &Profile, opts: &Opts) -> Result<u8> {
    let w = world(p, true, opts)?;
    let plan = compute(&w, opts)?;
    let notes = plan.notes.clone();
    if plan.actions.is_empty() {
        if !opts.quiet {
            println!("nothing to remove: no objects of {} on this host", p.host);
        }
        let kept = w
            .state
            .namespaces
            .iter()
            .filter(|n| w.observed.named.get(*n).and_then(|v| v.loopback_mark()) == Some(w.desired.mark.as_str()))
            .cloned()
            .collect();
        State { host: p.host.clone(), namespaces: kept, ..State::default() }.save()?;
    } else {
        execute(p, w, plan, opts, true)?;
        if !opts.quiet {
            println!("destroyed what {} created", p.host);
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    Ok(0)
}
