//! The commands, each a straight pipeline: facts → desired (pure) → scope →
//! observe → plan → apply (journal) → verify, under the host lock, with the
//! state file kept in `state`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::apply::{self, Apply};
use crate::desired::Desired;
use crate::error::{Context, Result, exit};
use crate::facts::{self, Facts};
use crate::firewall;
use crate::lock::HostLock;
use crate::model::Ns;
use crate::netlink::Session;
use crate::observe::{self, Observed};
use crate::output;
use crate::plan::{self, Plan, PlanOptions, Step, Verb};
use crate::preflight;
use crate::profile::Profile;
use crate::scope::{self, Depth};
use crate::state::{self, State};

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
    Ok(Profile::load(path)?)
}

/// What a command decides from: the profile's wants and the host as found.
pub struct World {
    pub session: Session,
    pub state: State,
    pub observed: Observed,
    pub desired: Desired,
    pub warnings: Vec<String>,
    /// The br_netfilter warning needs the host's iptables FORWARD policy:
    /// read by a thread alongside the rest of the run (an `iptables-save`
    /// costs a few milliseconds).
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

/// The desired state of a run and the preflight warnings, from the profile
/// and the observed host (`destroy`: nothing, under the same owner). Pure:
/// the golden plan tests run exactly this.
pub fn desire(p: &Profile, facts: &Facts, host: &observe::NsView, destroy: bool) -> Result<(Desired, Vec<String>)> {
    if destroy {
        return Ok((Desired::nothing(&p.host, &p.owner_mark()), vec![]));
    }
    let pf = preflight::check(p, facts, host);
    if !pf.errors.is_empty() {
        crate::bail!(Conflict, "{}\nnothing was changed", pf.errors.join("\n"));
    }
    Ok((Desired::derive(p, facts), pf.warnings))
}

/// Observes the host for `desired` (the host's view `host`, already read).
fn observe_for(
    session: &mut Session,
    facts: Facts,
    host: observe::NsView,
    state: &State,
    desired: &Desired,
    depth: Depth,
) -> Result<Observed> {
    let scope = scope::of(desired, state, depth);
    observe::read(session, facts, host, state.clone(), &scope, desired)
}

/// The host's view and the facts (the first thing every run reads).
fn host_facts(p: &Profile, session: &mut Session) -> Result<(observe::NsView, Facts)> {
    let host = observe::read_view(session.sock(&Ns::Host)?, &Ns::Host)?;
    let facts = facts::read(p, &host)?;
    Ok((host, facts))
}

fn lock(dir: &Path, opts: &Opts) -> Result<HostLock> {
    let quiet = opts.quiet;
    let lock = HostLock::acquire(dir, opts.lock_timeout, |holder| {
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
fn locked(p: &Profile, opts: &Opts, f: fn(&Profile, &Opts, &Path) -> Result<u8>) -> Result<u8> {
    let dir = state::run_dir();
    let lock = lock(&dir, opts)?;
    let result = f(p, opts, &dir);
    if State::load(&dir, &p.host).is_ok_and(|s| s.is_empty()) {
        lock.remove_files();
    }
    result
}

/// With -v, says how long a phase took (on standard error).
fn phase(opts: &Opts, what: &str, since: Instant) {
    if opts.verbose > 0 {
        eprintln!("vxrouter: {what} in {:.1} ms", since.elapsed().as_secs_f64() * 1000.0);
    }
}

fn world(p: &Profile, dir: &Path, destroy: bool, opts: &Opts) -> Result<World> {
    let t = Instant::now();
    let mut session = Session::new()?;
    let state = State::load(dir, &p.host)?;
    let (host, facts) = host_facts(p, &mut session)?;
    let (desired, warnings) = desire(p, &facts, &host, destroy)?;
    let mut warnings = warnings;
    let observed = observe_for(&mut session, facts, host, &state, &desired, Depth::Full)?;
    let mut pending_warnings = None;
    match crate::kinds::firewall::found(&observed, &Ns::Host).filter(|f| f.ipt.is_some()) {
        Some(fw) => warnings.extend(preflight::host_firewall_warnings(&observed.facts, fw)),
        None if !destroy && preflight::bridge_nf_on(&observed.facts) && firewall::iptables::available() => {
            let facts = observed.facts.clone();
            pending_warnings =
                Some(std::thread::spawn(move || match firewall::read(None, "the host", &[firewall::Backend::Iptables]) {
                    Ok(fw) => preflight::host_firewall_warnings(&facts, &fw),
                    Err(_) => vec![],
                }));
        }
        None => {}
    }
    let links: usize = observed.host.links.len() + observed.named.values().map(|v| v.links.len()).sum::<usize>();
    phase(opts, &format!("observed {} namespace(s), {links} link(s)", 1 + observed.named.len()), t);
    Ok(World { session, state, observed, desired, warnings, pending_warnings })
}

fn compute(w: &World, opts: &Opts) -> Result<Plan> {
    plan::plan(&w.desired, &w.observed, PlanOptions { force: opts.force })
        .map_err(|c| crate::error!(Conflict, "{c}\nnothing was changed"))
}

/// What `plan` and `destroy` print before acting: the warnings, the steps
/// (or `empty`), the notes. The golden plan tests compare exactly this.
pub fn plan_text(plan: &Plan, warnings: &[String], empty: &str) -> Vec<String> {
    let mut out: Vec<String> = warnings.iter().map(|w| format!("warning: {w}")).collect();
    if plan.steps.is_empty() {
        out.push(empty.to_string());
    }
    out.extend(plan.steps.iter().map(|s| s.line()));
    out.extend(plan.notes.iter().map(|n| format!("note: {n}")));
    out
}

#[derive(Serialize)]
struct JsonStep {
    verb: Verb,
    object: String,
    detail: String,
    action: &'static str,
    #[serde(flatten)]
    fields: serde_json::Value,
}

fn json_steps(plan: &Plan) -> Vec<JsonStep> {
    plan.steps
        .iter()
        .map(|s| {
            let fields = match s.fields() {
                v @ serde_json::Value::Object(_) => v,
                other => serde_json::json!({ "step": other }),
            };
            JsonStep { verb: s.verb(), object: s.object(), detail: s.detail(), action: s.action(), fields }
        })
        .collect()
}

fn print_plan(p: &Profile, plan: &Plan, warnings: &[String], opts: &Opts, empty_msg: &str) -> Result<()> {
    if opts.json {
        let doc = serde_json::json!({
            "profile": p.source, "host": p.host, "changes": json_steps(plan),
            "notes": plan.notes, "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for w in warnings {
        eprintln!("{}: {w}", output::warning_word());
    }
    if plan.steps.is_empty() {
        if !opts.quiet {
            println!("{empty_msg}");
        }
    } else {
        for s in &plan.steps {
            println!("{}", painted_line(s.as_ref()));
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
    Ok(exit::OK)
}

pub fn plan(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, |p, opts, dir| {
        let mut w = world(p, dir, false, opts)?;
        let plan = compute(&w, opts)?;
        let warnings = w.take_warnings();
        print_plan(p, &plan, &warnings, opts, "no changes: the host matches the profile")?;
        Ok(exit::OK)
    })
}

pub fn check(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, check_locked)
}

fn check_locked(p: &Profile, opts: &Opts, dir: &Path) -> Result<u8> {
    let mut w = world(p, dir, false, opts)?;
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
            plan.steps.iter().map(|s| Difference { status: s.verb().status(), object: s.object(), detail: s.detail() }).collect();
        let doc = serde_json::json!({
            "profile": p.source, "host": p.host, "matches": diffs.is_empty(),
            "differences": diffs, "notes": plan.notes, "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for warn in &warnings {
            eprintln!("{}: {warn}", output::warning_word());
        }
        for s in &plan.steps {
            let status = output::out(tone(s.verb()), s.verb().status());
            match s.detail() {
                d if d.is_empty() => println!("{status}: {}", s.object()),
                d => println!("{status}: {}: {d}", s.object()),
            }
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        if plan.steps.is_empty() && !opts.quiet {
            println!("ok: the host matches {}", p.source);
        }
    }
    Ok(if plan.steps.is_empty() { exit::OK } else { exit::DRIFT })
}

fn tone(v: Verb) -> output::Tone {
    match v {
        Verb::Create => output::Tone::Good,
        Verb::Change | Verb::Recreate => output::Tone::Warn,
        Verb::Remove => output::Tone::Bad,
    }
}

/// A plan line with its verb coloured (on a terminal).
fn painted_line(s: &dyn Step) -> String {
    let line = s.line();
    match line.split_once(' ') {
        Some((verb, rest)) => format!("{} {rest}", output::out(tone(s.verb()), verb)),
        None => line,
    }
}

/// Executes a plan with state bookkeeping around it, then verifies.
fn execute(p: &Profile, dir: &Path, mut w: World, plan: Plan, opts: &Opts) -> Result<()> {
    let before = w.state.clone();
    let during = state::during(&before, &p.host, &w.desired, &plan);
    during.save(dir)?;

    let quiet = opts.quiet || opts.json;
    let t = Instant::now();
    let mut cx = Apply::new(&mut w.session, &w.observed, &w.desired.mark, &w.desired.host);
    let verbose = opts.verbose;
    let mut last = Instant::now();
    let run = apply::run(&plan.steps, &mut cx, |s| {
        if !quiet {
            println!("{}", painted_line(s));
        }
        if verbose > 1 {
            eprintln!("vxrouter:   {:.2} ms  {}", last.elapsed().as_secs_f64() * 1000.0, s.title());
            last = Instant::now();
        }
    });
    let late_problems = std::mem::take(&mut cx.warnings);
    drop(cx);
    for warn in &late_problems {
        eprintln!("{}: {warn}", output::warning_word());
    }
    if let Err(e) = run {
        before.save(dir).context("restore state file after rollback")?;
        return Err(e);
    }

    phase(opts, &format!("applied {} step(s)", plan.steps.len()), t);
    let t = Instant::now();
    // Verify: the host must now match exactly.
    let (host, facts) = host_facts(p, &mut w.session)?;
    let observed = observe_for(&mut w.session, facts, host, &during, &w.desired, Depth::Verify)?;
    let again =
        plan::plan(&w.desired, &observed, PlanOptions { force: opts.force }).map_err(|c| crate::error!(Verification, "{c}"))?;
    phase(opts, "verified", t);
    let leftover: Vec<String> = again.steps.iter().map(|s| s.line()).collect();
    state::after(&w.desired, &observed, &during).save(dir)?;
    if !leftover.is_empty() {
        crate::bail!(Verification, "verification failed: after applying, these differences remain:\n  {}", leftover.join("\n  "));
    }
    Ok(())
}

pub fn apply(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, apply_locked)
}

fn apply_locked(p: &Profile, opts: &Opts, dir: &Path) -> Result<u8> {
    let mut w = world(p, dir, false, opts)?;
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
    if plan.steps.is_empty() {
        print_late();
        // Still drop a stale `pending` left by an interrupted run.
        if w.state.pending.is_some() {
            let mut st = w.state.clone();
            st.pending = None;
            st.save(dir)?;
        }
        if !opts.quiet {
            println!("nothing to do: the host already matches {}", p.source);
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        return Ok(exit::OK);
    }
    let notes = plan.notes.clone();
    let result = execute(p, dir, w, plan, opts);
    print_late();
    result?;
    for n in &notes {
        println!("note: {n}");
    }
    if !opts.quiet {
        println!("applied {}", p.source);
    }
    Ok(exit::OK)
}

pub fn destroy(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, destroy_locked)
}

fn destroy_locked(p: &Profile, opts: &Opts, dir: &Path) -> Result<u8> {
    let w = world(p, dir, true, opts)?;
    let plan = compute(&w, opts)?;
    let notes = plan.notes.clone();
    if plan.steps.is_empty() {
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
        State { host: p.host.clone(), namespaces: kept, ..State::default() }.save(dir)?;
    } else {
        execute(p, dir, w, plan, opts)?;
        if !opts.quiet {
            println!("destroyed what {} created", p.host);
        }
    }
    for n in &notes {
        println!("note: {n}");
    }
    Ok(exit::OK)
}

/// `vxrouter __observed`: the observed state a plan would be computed from,
/// as the golden plan tests' `observed.json`.
pub fn dump_observed(path: &Path, destroy: bool) -> Result<()> {
    let p = load(path)?;
    let dir = state::run_dir();
    let _lock = lock(&dir, &Opts { lock_timeout: Duration::from_secs(60), quiet: true, ..Opts::default() })?;
    let mut session = Session::new()?;
    let state = State::load(&dir, &p.host)?;
    let (host, facts) = host_facts(&p, &mut session)?;
    let desired = if destroy { Desired::nothing(&p.host, &p.owner_mark()) } else { Desired::derive(&p, &facts) };
    let observed = observe_for(&mut session, facts, host, &state, &desired, Depth::Full)?;
    println!("{}", serde_json::to_string_pretty(&observed.to_json()?)?);
    Ok(())
}

/// The golden plan tests' run: a case directory's profile and observed host
/// in, what the command on `command` ("$ vxrouter plan", "$ vxrouter destroy
/// --force") prints before acting out.
pub fn golden(dir: &Path, command: &str) -> String {
    let result = (|| -> Result<Vec<String>> {
        let p = load(&dir.join("profile.toml"))?;
        let text = std::fs::read_to_string(dir.join("observed.json")).context("read observed.json")?;
        let observed = Observed::from_json(serde_json::from_str(&text)?)?;
        let words: Vec<&str> = command.split_whitespace().collect();
        let destroy = words.contains(&"destroy");
        let (desired, warnings) = desire(&p, &observed.facts, &observed.host, destroy)?;
        let plan = plan::plan(&desired, &observed, PlanOptions { force: words.contains(&"--force") })
            .map_err(|c| crate::error!(Conflict, "{c}\nnothing was changed"))?;
        Ok(plan_text(&plan, &warnings, "no changes"))
    })();
    match result {
        Ok(lines) => lines.iter().map(|l| format!("{l}\n")).collect(),
        Err(e) => format!("error: {e}\n"),
    }
}
