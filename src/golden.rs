//! The golden plan tests' view of a run (tests/plan.rs): a profile and an
//! observed host in, the text `vxrouter plan` or `destroy` would print out.

use std::path::Path;

use crate::desired::{self, Desired};
use crate::observe::Observed;
use crate::plan::{self, PlanOptions};
use crate::preflight;
use crate::profile::Profile;

/// What the command on `command` ("$ vxrouter plan", "$ vxrouter destroy
/// --force") prints for the case in `dir`, before it would act.
pub fn plan_text(dir: &Path, command: &str) -> String {
    let profile = match Profile::load(&dir.join("profile.toml")) {
        Ok(p) => p,
        Err(e) => return format!("error: {e}\n"),
    };
    let text = std::fs::read_to_string(dir.join("observed.json")).unwrap_or_default();
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return format!("error: observed.json: {e}\n"),
    };
    let nft = doc.get("nft").and_then(|v| v.as_bool()).unwrap_or(false);
    let observed: Observed = match serde_json::from_value(doc) {
        Ok(o) => o,
        Err(e) => return format!("error: observed.json: {e}\n"),
    };
    let words: Vec<&str> = command.split_whitespace().collect();
    let destroy = words.contains(&"destroy");
    let force = words.contains(&"--force");
    let mut out = String::new();
    let desired = if destroy {
        Desired::nothing(&profile.host, &profile.owner_mark())
    } else {
        let pf = preflight::check(&profile, &observed.host);
        if !pf.errors.is_empty() {
            return format!("error: {}\nnothing was changed\n", pf.errors.join("\n"));
        }
        for w in &pf.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        desired::derive(&profile, pf.underlay.as_ref())
    };
    match plan::plan(&desired, &observed, PlanOptions { force, nft }) {
        Err(c) => out.push_str(&format!("error: {c}\nnothing was changed\n")),
        Ok(p) => {
            if p.actions.is_empty() {
                out.push_str("no changes\n");
            }
            for a in &p.actions {
                out.push_str(&a.line());
                out.push('\n');
            }
            for n in &p.notes {
                out.push_str(&format!("note: {n}\n"));
            }
        }
    }
    out
}
