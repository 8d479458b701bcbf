//! Interface names: the kernel's rules, and the names vxrouter derives when a
//! profile leaves them out.

/// A value quoted for a message, cut when long (a 10 kB string in a profile
/// should not come back as a 10 kB error).
pub fn shown(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut:?}… ({} bytes)", s.len())
    }
}

/// IFNAMSIZ - 1: the kernel stores names in 16 bytes including the NUL.
pub const MAX_IFNAME: usize = 15;

/// Checks a name against the kernel's `dev_valid_name()`: 1-15 bytes, not
/// "." or "..", no '/', ':' or whitespace.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME {
        return Err(format!("interface name {} is {} bytes; the kernel allows at most {MAX_IFNAME}", shown(name), name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!("interface name {name:?} contains {c:?}, which the kernel does not allow"));
    }
    Ok(())
}

/// Namespace names become file names under /run/netns and appear in
/// ownership marks, so they are kept to a conservative alphabet.
pub fn check_plain_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > max {
        return Err(format!("{what} {} is longer than {max} bytes", shown(name)));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} {name:?} is not allowed"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("{what} {name:?} contains {c:?}; use letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// FNV-1a: a tiny, stable hash for derived names and MAC addresses. Stability
/// across releases matters more than quality here, so it is written out
/// rather than borrowed from std (whose hasher may change).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `prefix` + `base`, shortened to fit IFNAMSIZ: when too long, the base is
/// cut and 4 hex digits of its hash keep distinct long names distinct.
pub fn derive_ifname(prefix: &str, base: &str) -> String {
    let full = format!("{prefix}{base}");
    if full.len() <= MAX_IFNAME {
        return full;
    }
    let hash = format!("{:04x}", fnv1a(&[base]) & 0xffff);
    let room = MAX_IFNAME - prefix.len() - hash.len() - 1;
    let cut: String = base
        .chars()
        .scan(0, |n, c| {
            *n += c.len_utf8();
            (*n <= room).then_some(c)
        })
        .collect();
    format!("{prefix}{cut}-{hash}")
}

/// Default VXLAN link name for a VNI ("vxlan1070"), as the seed names it.
pub fn default_vxlan_name(vni: u32) -> String {
    format!("vxlan{vni}")
}

/// Default names of a router leg attached to `bridge`: the end in the bridge
/// ("rt-<bridge>", the router's port) and the end in the namespace
/// ("gw-<bridge>", which holds the gateway address of that network).
pub fn default_leg_names(bridge: &str) -> [String; 2] {
    [derive_ifname("rt-", bridge), derive_ifname("gw-", bridge)]
}

/// A stable, locally administered unicast MAC for a link vxrouter creates.
///
/// Router legs keep their MAC across recreation, so a VM that cached the
/// gateway's MAC keeps working after a repair (no neighbour black hole).
/// Derived from the host name, the namespace ("" for the host) and the link
/// name: first octet 0x02 (locally administered, unicast), then 5 hash bytes.
pub fn stable_mac(host: &str, netns: &str, link: &str) -> [u8; 6] {
    let h = fnv1a(&["vxrouter-mac", host, netns, link]).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("veth15.0").is_ok());
        assert!(check_ifname("abcdefghijklmno").is_ok());
        assert!(check_ifname("abcdefghijklmnop").unwrap_err().contains("16 bytes"));
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derived_names_fit_and_stay_distinct() {
        assert_eq!(default_leg_names("br-pr"), ["rt-br-pr".to_string(), "gw-br-pr".to_string()]);
        let a = derive_ifname("rt-", "bridge-segment-1");
        let b = derive_ifname("rt-", "bridge-segment-2");
        assert!(a.len() <= MAX_IFNAME && b.len() <= MAX_IFNAME);
        assert_ne!(a, b);
        assert!(check_ifname(&a).is_ok());
        assert_eq!(default_vxlan_name(16_777_215), "vxlan16777215");
    }

    #[test]
    fn stable_mac_is_stable_and_local_unicast() {
        let m = stable_mac("host-a", "ns1", "gw-br-pr");
        assert_eq!(m, stable_mac("host-a", "ns1", "gw-br-pr"));
        assert_ne!(m, stable_mac("host-b", "ns1", "gw-br-pr"));
        assert_eq!(m[0] & 0x03, 0x02);
        // Pinned: a change here changes every deployed router's gateway MAC.
        assert_eq!(fnv1a(&["a"]), 0xaf63dc4c8601ec8c);
    }
}
