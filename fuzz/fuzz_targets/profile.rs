//! Profile parse + validate must never panic, whatever the bytes. When a
//! profile is accepted, the pure derivation of desired state (names, MACs,
//! MTUs, firewall rules) is exercised too, and the error contract is checked:
//! every `Err` carries at least one error at line >= 1, column >= 1, and no
//! error text holds a control, invisible or text-reordering character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxrouter::desired::Desired;
use vxrouter::facts::{Facts, UnderlayFacts};
use vxrouter::profile::Profile;
use vxrouter::profile::names::{check_ifname, is_hidden};

fuzz_target!(|data: &[u8]| {
    match Profile::parse_bytes("fuzz.toml", data) {
        Ok(profile) => {
            let d = Desired::derive(&profile, &Facts::default());
            // Also with host facts, so the underlay-MTU arithmetic is covered.
            let facts = Facts { underlay: Some(UnderlayFacts { mtu: 68, address: None }), ..Facts::default() };
            let _ = Desired::derive(&profile, &facts);
            // Every name vxrouter would create, derived ones included, must be
            // one the kernel accepts.
            for (_, link) in d.links() {
                if let Err(reason) = check_ifname(&link.name) {
                    panic!("accepted profile derives an invalid link name: {reason}");
                }
            }
            let _ = format!("{d:?}");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "Err with no errors");
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "bad location {}:{} in {e}", e.line, e.column);
            }
            let text = errors.to_string();
            // Lines are separated by '\n'; nothing else may be hidden.
            for line in text.lines() {
                assert!(!line.chars().any(is_hidden), "an error prints a hidden character: {line:?}");
            }
        }
    }
});
