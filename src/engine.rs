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
    /// Apply or destroy even though another profile owns this host name.
    pub take_over: bool,
    /// `apply --confirm SECONDS`: roll back unless confirmed in time.
    pub confirm: Option<u64>,
    /// `adopt`, `apply --adopt`, `plan --adopt`: take over objects built by
    /// hand that the profile names (see PlanOptions::adopt).
    pub adopt: bool,
}

/// Whether a command changes the host (exclusive lock, state written) or
/// only reads it (shared lock, if any; nothing written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

pub fn load(path: &Path) -> Result<Profile> {
    Ok(Profile::load(path)?)
}

/// What a command decides from: the profile's wants and the host as found.
pub struct World {
    pub session: Session,
    pub state: State,
    /// The state was rebuilt from the kernel and should be written back.
    pub state_recovered: bool,
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
    adopt: bool,
) -> Result<Observed> {
    let scope = scope::Scope { adopt, ..scope::of(desired, state, depth) };
    observe::read(session, facts, host, state.clone(), &scope, desired)
}

/// The host's view and the facts (the first thing every run reads).
fn host_facts(p: &Profile, session: &mut Session) -> Result<(observe::NsView, Facts)> {
    let host = observe::read_view(session.sock(&Ns::Host)?, &Ns::Host)?;
    let facts = facts::read(p, &host)?;
    Ok((host, facts))
}

fn lock(dir: &Path, opts: &Opts, access: Access) -> Result<Option<HostLock>> {
    let quiet = opts.quiet;
    let on_wait = |holder: &str| {
        if !quiet {
            crate::tell!("waiting for {holder} to finish…");
        }
    };
    let lock = match access {
        Access::Write => Some(HostLock::acquire(dir, opts.lock_timeout, on_wait)?),
        Access::Read => HostLock::acquire_shared(dir, opts.lock_timeout, on_wait)?,
    };
    crate::testhooks::hold();
    Ok(lock)
}

/// Runs a command under the host lock: exclusive for commands that change
/// the host, shared (when there is a lock file at all) for those that only
/// read it, so they also work on a read-only /run. Afterwards, when no host
/// name has state left (never applied, rolled back, destroyed), the lock
/// file goes too, so an unused machine keeps no vxrouter files.
fn locked(p: &Profile, opts: &Opts, access: Access, f: fn(&Profile, &Opts, &Path) -> Result<u8>) -> Result<u8> {
    let dir = state::run_dir();
    let lock = lock(&dir, opts, access)?;
    let result = f(p, opts, &dir);
    if let Some(lock) = lock
        && access == Access::Write
        && State::read(&dir, &p.host).is_ok_and(|s| s.is_none_or(|s| s.is_empty()))
        && State::others(&dir, &p.host).is_empty()
    {
        lock.remove_files();
    }
    result
}

/// The state of this host: the file, or — when it is missing or cannot be
/// parsed — what the kernel shows (see `recover`). Returns notes on what was
/// recovered. A file that cannot be parsed is moved aside when `access`
/// allows writing.
fn load_state(
    p: &Profile,
    dir: &Path,
    session: &mut Session,
    host: &observe::NsView,
    access: Access,
    read: Result<Option<State>>,
) -> Result<(State, Vec<String>)> {
    let why = match read {
        Ok(Some(st)) => return Ok((st, vec![])),
        Ok(None) => format!("no state file for {}", p.host),
        Err(e) if e.kind() == crate::error::ErrorKind::Conflict => {
            let path = State::path(dir, &p.host);
            if access == Access::Write {
                let aside = path.with_extension("json.unreadable");
                std::fs::rename(&path, &aside).with_context(|| format!("move {} aside", path.display()))?;
                format!("{e}; moved to {}", aside.display())
            } else {
                e.to_string()
            }
        }
        Err(e) => {
            return Err(e.context(format!("read the state of {} (kept under {}; run as root)", p.host, dir.display())));
        }
    };
    let (st, found) = crate::recover::rediscover(session, &p.host, Some(p), host)?;
    let notes =
        if found.is_empty() { vec![] } else { vec![format!("{why}: rediscovered from the kernel: {}", found.join("; "))] };
    Ok((st, notes))
}

/// Another profile owns this host name (the state file says which): refused
/// for commands that change the host, unless `--take-over`.
fn check_owner(p: &Profile, state: &State, opts: &Opts, access: Access) -> Result<Option<String>> {
    let me = profile_path(p);
    let Some(owner) = state.profile.as_deref().filter(|o| *o != me) else { return Ok(None) };
    let msg = format!(
        "host name {} is owned by the profile {owner}; {me} uses the same host.name, and would take over (and remove) \
         what {owner} created",
        p.host
    );
    if access == Access::Write && !opts.take_over {
        crate::bail!(Conflict, "{msg}; give it another host.name, or pass --take-over\nnothing was changed");
    }
    Ok(Some(msg))
}

/// The profile's absolute path, as the state file records it.
fn profile_path(p: &Profile) -> String {
    std::fs::canonicalize(&p.source).map(|x| x.display().to_string()).unwrap_or_else(|_| p.source.clone())
}

/// With -v, says how long a phase took (on standard error).
fn phase(opts: &Opts, what: &str, since: Instant) {
    if opts.verbose > 0 {
        crate::tell!("vxrouter: {what} in {:.1} ms", since.elapsed().as_secs_f64() * 1000.0);
    }
}

fn world(p: &Profile, dir: &Path, destroy: bool, opts: &Opts, access: Access) -> Result<World> {
    let t = Instant::now();
    // The firewall listings the state file implies start now and run
    // alongside the dumps (firewall::prefetch); the state is examined
    // below (read once: it holds the verified rulesets, ~240 kB at N = 1000).
    let read = State::read(dir, &p.host);
    if let Ok(Some(st)) = &read {
        firewall::prefetch(st);
    }
    let mut session = Session::new()?;
    let (host, facts) = host_facts(p, &mut session)?;
    let (state, recovered) = load_state(p, dir, &mut session, &host, access, read)?;
    let (desired, mut warnings) = desire(p, &facts, &host, destroy)?;
    warnings.extend(check_owner(p, &state, opts, access)?);
    if !destroy {
        claims(p, dir, &desired)?;
    }
    let state_recovered = state.recovered && !state.is_empty();
    warnings.extend(recovered);
    let observed = observe_for(&mut session, facts, host, &state, &desired, Depth::Full, opts.adopt)?;
    let mut pending_warnings = None;
    match crate::kinds::firewall::found(&observed, &Ns::Host).filter(|f| f.ipt.is_some()) {
        Some(fw) => warnings.extend(preflight::host_firewall_warnings(&observed.facts, fw)),
        None if !destroy && preflight::bridge_nf_on(&observed.facts) && firewall::iptables::available() => {
            let facts = observed.facts.clone();
            pending_warnings =
                Some(std::thread::spawn(move || match firewall::read(None, "the host", &[firewall::Backend::Iptables], None) {
                    Ok(fw) => preflight::host_firewall_warnings(&facts, &fw),
                    Err(_) => vec![],
                }));
        }
        None => {}
    }
    let links: usize = observed.host.links.len() + observed.named.values().map(|v| v.links.len()).sum::<usize>();
    phase(opts, &format!("observed {} namespace(s), {links} link(s)", 1 + observed.named.len()), t);
    Ok(World { session, state, state_recovered, observed, desired, warnings, pending_warnings })
}

/// Refuses a public address another host name's router on this machine
/// already holds (two routers answering for one address).
fn claims(p: &Profile, dir: &Path, desired: &Desired) -> Result<()> {
    let Some(public) = desired.public_address() else { return Ok(()) };
    for other in State::others(dir, &p.host) {
        if other.public.as_deref() == Some(public.to_string().as_str()) {
            crate::bail!(
                Conflict,
                "{}: router.public.address {public} is already the public address of host {} ({}) on this machine\nnothing was changed",
                p.key_location("router.public", "address"),
                other.host,
                other.profile.as_deref().unwrap_or("profile unknown")
            );
        }
    }
    Ok(())
}

fn compute(w: &World, opts: &Opts) -> Result<Plan> {
    plan::plan(&w.desired, &w.observed, PlanOptions { force: opts.force, adopt: opts.adopt })
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
        crate::say!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for w in warnings {
        crate::tell!("{}: {w}", output::warning_word());
    }
    if plan.steps.is_empty() {
        if !opts.quiet {
            crate::say!("{empty_msg}");
        }
    } else {
        for s in &plan.steps {
            crate::say!("{}", painted_line(s.as_ref()));
        }
    }
    for n in &plan.notes {
        crate::say!("note: {n}");
    }
    if let Some(hint) = confirm_hint(plan) {
        crate::say!("note: {hint}");
    }
    Ok(())
}

/// When a plan touches what may carry the operator's own connection (the
/// uplink NIC and its addresses), `plan` says how to apply it safely.
fn confirm_hint(plan: &Plan) -> Option<String> {
    let risky: Vec<String> =
        plan.steps.iter().filter(|s| matches!(s.action(), "enslave" | "release" | "move_address")).map(|s| s.object()).collect();
    (!risky.is_empty()).then(|| {
        format!(
            "this plan changes {} — if you are connected through that NIC, use `vxrouter apply --confirm 120`: \
             it rolls back by itself unless you confirm, also if your session drops",
            risky.join(", ")
        )
    })
}

pub fn validate(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    if opts.json {
        crate::say!("{}", serde_json::to_string_pretty(&serde_json::json!({"profile": p.source, "valid": true, "parsed": p}))?);
    } else if !opts.quiet {
        crate::say!("{}: valid", p.source);
    }
    Ok(exit::OK)
}

pub fn plan(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, Access::Read, |p, opts, dir| {
        let mut w = world(p, dir, false, opts, Access::Read)?;
        let plan = compute(&w, opts)?;
        let warnings = w.take_warnings();
        print_plan(p, &plan, &warnings, opts, "no changes: the host matches the profile")?;
        Ok(exit::OK)
    })
}

pub fn check(path: &Path, opts: &Opts) -> Result<u8> {
    let p = load(path)?;
    locked(&p, opts, Access::Read, check_locked)
}

fn check_locked(p: &Profile, opts: &Opts, dir: &Path) -> Result<u8> {
    let mut w = world(p, dir, false, opts, Access::Read)?;
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
            "differences": diffs, "notes": plan.notes, "warnings": warnings, "unhealthy": plan.health,
        });
        crate::say!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for warn in &warnings {
            crate::tell!("{}: {warn}", output::warning_word());
        }
        for s in &plan.steps {
            let status = output::out(tone(s.verb()), s.verb().status());
            match s.detail() {
                d if d.is_empty() => crate::say!("{status}: {}", s.object()),
                d => crate::say!("{status}: {}: {d}", s.object()),
            }
        }
        for n in &plan.notes {
            crate::say!("note: {n}");
        }
        for h in &plan.health {
            crate::say!("{}: {h}", output::out(output::Tone::Bad, "unhealthy"));
        }
        if plan.steps.is_empty() && plan.health.is_empty() && !opts.quiet {
            crate::say!("ok: the host matches {}", p.source);
        }
    }
    Ok(if plan.steps.is_empty() && plan.health.is_empty() { exit::OK } else { exit::DRIFT })
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
fn execute(p: &Profile, dir: &Path, mut w: World, plan: &Plan, opts: &Opts) -> Result<()> {
    let before = w.state.clone();
    let during = state::during(&before, &p.host, Some(&profile_path(p)), &w.desired, plan);
    during.save(dir)?;

    let quiet = opts.quiet || opts.json;
    let t = Instant::now();
    let mut cx = Apply::new(&mut w.session, &w.observed, &w.desired.mark, &w.desired.host);
    let verbose = opts.verbose;
    let mut last = Instant::now();
    let run = apply::run(&plan.steps, &mut cx, |s| {
        if !quiet {
            crate::say!("{}", painted_line(s));
        }
        if verbose > 1 {
            crate::tell!("vxrouter:   {:.2} ms  {}", last.elapsed().as_secs_f64() * 1000.0, s.title());
            last = Instant::now();
        }
    });
    for warn in std::mem::take(&mut cx.warnings) {
        crate::tell!("{}: {warn}", output::warning_word());
    }
    if let Err(e) = run {
        drop(cx);
        // After an incomplete rollback the state keeps what the run may have
        // made (pending), so the next run adopts or removes it.
        if e.kind() != crate::error::ErrorKind::IncompleteRollback {
            before.save(dir).context("restore state file after rollback")?;
        }
        return Err(e);
    }

    phase(opts, &format!("applied {} step(s)", plan.steps.len()), t);
    let t = Instant::now();
    // Test hook: step n + 1 is "after the last step, before verification".
    crate::testhooks::signal_step(plan.steps.len() + 1);
    if let Some(sig) = crate::signals::caught() {
        let e = crate::error!(Interrupted, "interrupted by {sig} after the last step, before verification");
        let e = apply::rolled_back(e, cx.rollback());
        drop(cx);
        before.save(dir).context("restore state file after rollback")?;
        return Err(e);
    }
    // Verify: the host must now match exactly. If it does not (or cannot be
    // read), the run is rolled back like any failed step.
    crate::kinds::firewall::prefetch_verification(&w.desired, &during);
    let verified = (|| -> Result<Observed> {
        let (host, facts) = host_facts(p, cx.session)?;
        let observed = observe_for(cx.session, facts, host, &during, &w.desired, Depth::Verify, false)?;
        let again = plan::plan(&w.desired, &observed, PlanOptions { force: opts.force, adopt: opts.adopt })
            .map_err(|c| crate::error!(Verification, "verification failed: {c}"))?;
        let leftover: Vec<String> = again.steps.iter().map(|s| s.line()).collect();
        if !leftover.is_empty() {
            crate::bail!(
                Verification,
                "verification failed: after applying, these differences remain:\n  {}",
                leftover.join("\n  ")
            );
        }
        Ok(observed)
    })();
    phase(opts, "verified", t);
    match verified {
        Ok(observed) => {
            state::after(&w.desired, &observed, &during).save(dir)?;
            let Some(secs) = opts.confirm else { return Ok(()) };
            match crate::confirm::wait(dir, &p.host, secs)? {
                crate::confirm::Outcome::Confirmed => {
                    crate::say!("confirmed: the change stays");
                    Ok(())
                }
                crate::confirm::Outcome::Refused(why) => {
                    let undo_errors = cx.rollback();
                    drop(cx);
                    let complete = undo_errors.is_empty();
                    let e = apply::rolled_back(crate::error!(NotConfirmed, "{why}"), undo_errors);
                    if complete {
                        before.save(dir).context("restore state file after rollback")?;
                    }
                    crate::tell!("{}: {e}", output::error_word());
                    std::process::exit(i32::from(e.kind().exit_code()));
                }
            }
        }
        Err(e) => {
            let undo_errors = cx.rollback();
            drop(cx);
            let complete = undo_errors.is_empty();
            let e = apply::rolled_back(e, undo_errors);
            if complete {
                before.save(dir).context("restore state file after rollback")?;
            }
            Err(e)
        }
    }
}

pub fn apply(path: &Path, opts: &Opts) -> Result<u8> {
    crate::signals::guard();
    changing(path, opts, false)
}

pub fn destroy(path: &Path, opts: &Opts) -> Result<u8> {
    crate::signals::guard();
    changing(path, opts, true)
}

/// `apply` or `destroy`; with `--json`, one document on standard output
/// whatever happened (the error also goes to standard error as usual).
fn changing(path: &Path, opts: &Opts, destroy: bool) -> Result<u8> {
    let p = load(path)?;
    let f = if destroy { destroy_locked } else { apply_locked };
    let result = locked(&p, opts, Access::Write, f);
    if opts.json
        && let Err(e) = &result
    {
        let incomplete = e.kind() == crate::error::ErrorKind::IncompleteRollback;
        let doc = serde_json::json!({
            "profile": p.source, "host": p.host, "changed": incomplete,
            "rolled_back": if incomplete { "incomplete" } else { "complete" },
            "error": e.to_string(), "kind": e.kind(),
        });
        crate::say!("{}", serde_json::to_string_pretty(&doc)?);
    }
    result
}

/// What `apply --json` and `destroy --json` print after a run that did not
/// fail: what changed (the steps), notes and warnings.
fn print_done(p: &Profile, plan: &Plan, warnings: &[String], opts: &Opts, done: &str) -> Result<()> {
    if opts.json {
        let doc = serde_json::json!({
            "profile": p.source, "host": p.host, "changed": !plan.steps.is_empty(),
            "changes": json_steps(plan), "notes": plan.notes, "warnings": warnings,
        });
        crate::say!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for n in &plan.notes {
        crate::say!("note: {n}");
    }
    if !opts.quiet {
        crate::say!("{done}");
    }
    Ok(())
}

fn apply_locked(p: &Profile, opts: &Opts, dir: &Path) -> Result<u8> {
    let mut w = world(p, dir, false, opts, Access::Write)?;
    let plan = compute(&w, opts)?;
    let mut warnings = std::mem::take(&mut w.warnings);
    if !opts.json {
        for warn in &warnings {
            crate::tell!("{}: {warn}", output::warning_word());
        }
    }
    // The slow warnings (host firewall) come when they are ready, after the
    // steps: they never hold an apply up. (A confirmation wait forks: no
    // other thread may run then.)
    let mut late = w.pending_warnings.take();
    if opts.confirm.is_some()
        && let Some(h) = late.take()
    {
        warnings.extend(h.join().unwrap_or_default());
    }
    let late = move || late.map(|h| h.join().unwrap_or_default()).unwrap_or_default();
    if plan.steps.is_empty() {
        if let Some(st) = state::unchanged(&w.state, w.state_recovered, &profile_path(p), &w.desired, &w.observed) {
            st.save(dir)?;
        }
        let late = late();
        if !opts.json {
            for warn in &late {
                crate::tell!("{}: {warn}", output::warning_word());
            }
        }
        warnings.extend(late);
        print_done(p, &plan, &warnings, opts, &format!("nothing to do: the host already matches {}", p.source))?;
        return Ok(exit::OK);
    }
    let result = execute(p, dir, w, &plan, opts);
    let late = late();
    if !opts.json {
        for warn in &late {
            crate::tell!("{}: {warn}", output::warning_word());
        }
    }
    warnings.extend(late);
    result?;
    note_late_signal(&plan, &mut warnings);
    print_done(p, &plan, &warnings, opts, &format!("applied {}", p.source))?;
    Ok(exit::OK)
}

/// A signal that arrived once the run was verified and recorded changed
/// nothing: the run completed, and says so.
fn note_late_signal(plan: &Plan, warnings: &mut Vec<String>) {
    // Test hook: step n + 2 is "verified and recorded".
    crate::testhooks::signal_step(plan.steps.len() + 2);
    if let Some(sig) = crate::signals::caught() {
        let warning = format!("received {sig} after the last change: the run completed");
        crate::tell!("{}: {warning}", output::warning_word());
        warnings.push(warning);
    }
}

fn destroy_locked(p: &Profile, opts: &Opts, dir: &Path) -> Result<u8> {
    let mut w = world(p, dir, true, opts, Access::Write)?;
    let mut warnings = w.take_warnings();
    if !opts.json {
        for warn in &warnings {
            crate::tell!("{}: {warn}", output::warning_word());
        }
    }
    let plan = compute(&w, opts)?;
    if plan.steps.is_empty() {
        state::nothing_removed(&w.state, &p.host, &w.desired, &w.observed).save(dir)?;
        print_done(p, &plan, &warnings, opts, &format!("nothing to remove: no objects of {} on this host", p.host))?;
    } else {
        execute(p, dir, w, &plan, opts)?;
        note_late_signal(&plan, &mut warnings);
        print_done(p, &plan, &warnings, opts, &format!("destroyed what {} created", p.host))?;
    }
    Ok(exit::OK)
}

/// `vxrouter destroy --host NAME`: everything of a host name, found from
/// the state file and the kernel, without its profile.
pub fn destroy_host(host: &str, opts: &Opts) -> Result<u8> {
    crate::signals::guard();
    if let Err(reason) = crate::profile::names::check_plain_name("host name", host, 64) {
        crate::bail!(Usage, "--host: {reason}");
    }
    let p = Profile {
        source: format!("(host {host}, no profile)"),
        host: host.to_string(),
        underlay: None,
        segments: vec![],
        router: None,
        evpn: None,
        text: String::new(),
    };
    let result = locked(&p, &Opts { take_over: true, ..*opts }, Access::Write, destroy_locked);
    if opts.json
        && let Err(e) = &result
    {
        let doc = serde_json::json!({ "host": host, "error": e.to_string(), "kind": e.kind() });
        crate::say!("{}", serde_json::to_string_pretty(&doc)?);
    }
    result
}

/// `vxrouter status`: every host name applied on this machine.
pub fn status(opts: &Opts) -> Result<u8> {
    let dir = state::run_dir();
    let _lock = lock(&dir, opts, Access::Read)?;
    let mut all = Vec::new();
    for st in crate::status::hosts(&dir) {
        let profile = st.profile.as_deref().and_then(|path| Profile::load(Path::new(path)).ok());
        let seen = match &profile {
            Some(p) => {
                let mut session = Session::new()?;
                let (host, facts) = host_facts(p, &mut session)?;
                match desire(p, &facts, &host, false) {
                    Ok((desired, _)) => {
                        let observed = observe_for(&mut session, facts, host, &st, &desired, Depth::Full, false)?;
                        let drift = crate::status::drift(&desired, &observed);
                        Some((observed, drift))
                    }
                    Err(e) => {
                        let mut s = crate::status::of(&st, None, None, None);
                        s.problem = Some(e.to_string());
                        all.push(s);
                        continue;
                    }
                }
            }
            None => None,
        };
        let (observed, drift) = match seen {
            Some((o, d)) => (Some(o), Some(d)),
            None => (None, None),
        };
        all.push(crate::status::of(&st, profile.as_ref(), observed.as_ref(), drift));
    }
    if opts.json {
        crate::say!("{}", serde_json::to_string_pretty(&serde_json::json!({ "hosts": all }))?);
    } else if all.is_empty() {
        crate::say!("nothing applied on this machine (no state under {})", dir.display());
    } else {
        for (i, h) in all.iter().enumerate() {
            if i > 0 {
                crate::say!();
            }
            use std::io::Write as _;
            let _ = write!(std::io::stdout(), "{}", crate::status::text(h));
        }
    }
    let drifted = all.iter().any(|h| h.drift.as_ref().is_some_and(|d| !d.is_empty()));
    Ok(if drifted { exit::DRIFT } else { exit::OK })
}

/// `vxrouter __observed`: the observed state a plan would be computed from,
/// as the golden plan tests' `observed.json`.
pub fn dump_observed(path: &Path, destroy: bool) -> Result<()> {
    let p = load(path)?;
    let dir = state::run_dir();
    let _lock = lock(&dir, &Opts { lock_timeout: Duration::from_secs(60), quiet: true, ..Opts::default() }, Access::Read)?;
    let mut session = Session::new()?;
    let (host, facts) = host_facts(&p, &mut session)?;
    let (state, _) = load_state(&p, &dir, &mut session, &host, Access::Read, State::read(&dir, &p.host))?;
    let desired = if destroy { Desired::nothing(&p.host, &p.owner_mark()) } else { Desired::derive(&p, &facts) };
    let observed = observe_for(&mut session, facts, host, &state, &desired, Depth::Full, false)?;
    crate::say!("{}", serde_json::to_string_pretty(&observed.to_json()?)?);
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
        let opts = PlanOptions { force: words.contains(&"--force"), adopt: words.contains(&"--adopt") };
        let plan = plan::plan(&desired, &observed, opts).map_err(|c| crate::error!(Conflict, "{c}\nnothing was changed"))?;
        Ok(plan_text(&plan, &warnings, "no changes"))
    })();
    match result {
        Ok(lines) => lines.iter().map(|l| format!("{l}\n")).collect(),
        Err(e) => format!("error: {e}\n"),
    }
}
