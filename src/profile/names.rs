//! Names: the alphabet every name in a profile keeps to (stricter than the
//! kernel, for the tools and files names end up in), how characters are
//! shown in messages, and the names vxrouter derives when a profile leaves
//! them out.

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

/// The alphabet of every name in a profile, as said in messages and in
/// docs/profile.md.
///
/// The kernel allows almost any byte in an interface name (not '/', ':',
/// whitespace, or the names ".", ".."), but the names travel much further:
/// into nft (`iifname "gw*"` is a wildcard), iptables (`-i gw+` is one),
/// dnsmasq (`interface=` takes '*'; its files are `<ns>@<leg>.*`, and '#',
/// '=' and ',' are its syntax), libvirt XML ('<', '&', quotes), keepalived
/// and FRR configs ('#' and '!' start comments), `/proc/sys` paths and
/// shells. '%' makes the kernel choose the name itself (`br%d` becomes
/// `br0`). Real interface names use letters, digits, '.', '-' and '_'; that
/// alphabet is safe in every one of those places without quoting, and the
/// first character is a letter or digit so no name reads as a command-line
/// option ("-x") or a hidden file (".x").
pub const ALPHABET: &str = "letters, digits, '.', '-' and '_', starting with a letter or digit";

/// Names the kernel refuses for a link although they pass `dev_valid_name()`:
/// they are the `/proc/sys/net/ipv{4,6}/conf/` entries for every interface
/// and for new ones (`ip link add all type bridge` fails with EINVAL).
const RESERVED_IFNAMES: [&str; 2] = ["all", "default"];

fn in_alphabet(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Why a character outside the alphabet matters, for the characters some
/// consumer of names treats specially. Characters not listed here are
/// refused just the same (the alphabet is an allow-list).
fn special_because(c: char) -> Option<&'static str> {
    Some(match c {
        '/' => "a path separator, which the kernel refuses in interface names",
        ':' => "the kernel refuses it in interface names, and it separates fields in ownership marks",
        c if c.is_whitespace() => "whitespace separates words in every config file and command line",
        '*' => "a wildcard in nft and dnsmasq",
        '+' => "a wildcard in iptables",
        '%' => "the kernel replaces \"%d\" with a number of its choosing",
        '@' => "it separates namespace and interface in vxrouter's dnsmasq file names",
        '#' | '!' | ';' => "it starts a comment or ends a statement in config files",
        '"' | '\'' | '\\' | '`' | '$' | '&' | '<' | '>' | '|' | '(' | ')' | '{' | '}' | '[' | ']' | '=' | ',' | '?' | '~'
        | '^' => "it is syntax in shells, config files or XML",
        _ => return None,
    })
}

/// Unicode names of the characters that hide in text: invisible ones, those
/// that reorder what is shown around them, and spaces that are not ' '.
/// (Not a full Unicode name table: other characters are shown by code point.)
fn unicode_name(c: char) -> Option<&'static str> {
    Some(match u32::from(c) {
        0x00 => "NULL",
        0x09 => "CHARACTER TABULATION",
        0x0A => "LINE FEED",
        0x0D => "CARRIAGE RETURN",
        0x1B => "ESCAPE",
        0x7F => "DELETE",
        0x85 => "NEXT LINE",
        0xA0 => "NO-BREAK SPACE",
        0xAD => "SOFT HYPHEN",
        0x34F => "COMBINING GRAPHEME JOINER",
        0x61C => "ARABIC LETTER MARK",
        0x115F => "HANGUL CHOSEONG FILLER",
        0x1160 => "HANGUL JUNGSEONG FILLER",
        0x180E => "MONGOLIAN VOWEL SEPARATOR",
        0x2000..=0x200A => "a typographic space",
        0x200B => "ZERO WIDTH SPACE",
        0x200C => "ZERO WIDTH NON-JOINER",
        0x200D => "ZERO WIDTH JOINER",
        0x200E => "LEFT-TO-RIGHT MARK",
        0x200F => "RIGHT-TO-LEFT MARK",
        0x2028 => "LINE SEPARATOR",
        0x2029 => "PARAGRAPH SEPARATOR",
        0x202A => "LEFT-TO-RIGHT EMBEDDING",
        0x202B => "RIGHT-TO-LEFT EMBEDDING",
        0x202C => "POP DIRECTIONAL FORMATTING",
        0x202D => "LEFT-TO-RIGHT OVERRIDE",
        0x202E => "RIGHT-TO-LEFT OVERRIDE",
        0x202F => "NARROW NO-BREAK SPACE",
        0x205F => "MEDIUM MATHEMATICAL SPACE",
        0x2060 => "WORD JOINER",
        0x2061 => "FUNCTION APPLICATION",
        0x2062 => "INVISIBLE TIMES",
        0x2063 => "INVISIBLE SEPARATOR",
        0x2064 => "INVISIBLE PLUS",
        0x2066 => "LEFT-TO-RIGHT ISOLATE",
        0x2067 => "RIGHT-TO-LEFT ISOLATE",
        0x2068 => "FIRST STRONG ISOLATE",
        0x2069 => "POP DIRECTIONAL ISOLATE",
        0x3000 => "IDEOGRAPHIC SPACE",
        0x3164 => "HANGUL FILLER",
        0xFE00..=0xFE0F => "a VARIATION SELECTOR",
        0xFEFF => "ZERO WIDTH NO-BREAK SPACE (byte order mark)",
        0xFFA0 => "HALFWIDTH HANGUL FILLER",
        0xE0001 => "LANGUAGE TAG",
        0xE0020..=0xE007F => "a TAG character",
        _ => return None,
    })
}

/// Characters that must never reach a terminal as they are: controls (an
/// escape sequence could rewrite the screen) and the characters named above,
/// which are invisible, reorder the text around them or pass for a plain
/// space, so that text would read differently from what it is.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || unicode_name(c).is_some()
}

/// A character as a message shows it: printable ASCII quoted (`'*'`),
/// anything else by code point and, where known, its name, never the raw
/// character when it is invisible or reorders text
/// (`U+202E RIGHT-TO-LEFT OVERRIDE`).
pub fn describe_char(c: char) -> String {
    let code = format!("U+{:04X}", u32::from(c));
    if c.is_ascii_graphic() || c == ' ' {
        format!("{c:?}")
    } else if let Some(name) = unicode_name(c) {
        format!("{code} {name}")
    } else if c.is_control() {
        format!("{code} (a control character)")
    } else if c.is_alphanumeric() {
        // Visible, but not ASCII: it may look exactly like an ASCII letter.
        format!("{code} {c:?} (not ASCII)")
    } else {
        format!("{code} (not ASCII)")
    }
}

/// The reason for the first character of `name` outside the alphabet.
fn bad_char(what: &str, name: &str) -> Option<String> {
    let c = name.chars().find(|c| !in_alphabet(*c))?;
    let because = special_because(c).map(|b| format!(" ({b})")).unwrap_or_default();
    Some(format!("{what} {} contains {}{because}; use {ALPHABET}", shown(name), describe_char(c)))
}

/// The alphabet's rule for the first character (which also refuses "."
/// and "..").
fn bad_start(what: &str, name: &str) -> Option<String> {
    let c = name.chars().next()?;
    (!c.is_ascii_alphanumeric()).then(|| format!("{what} {} starts with {c:?}; use {ALPHABET}", shown(name)))
}

/// Checks an interface name: 1-15 bytes of [`ALPHABET`], and not a name the
/// kernel reserves. Stricter than the kernel's `dev_valid_name()` on
/// purpose (see [`ALPHABET`]).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if let Some(reason) = bad_char("interface name", name) {
        return Err(reason);
    }
    if name.len() > MAX_IFNAME {
        return Err(format!("interface name {} is {} bytes; the kernel allows at most {MAX_IFNAME}", shown(name), name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(reason) = bad_start("interface name", name) {
        return Err(reason);
    }
    if RESERVED_IFNAMES.contains(&name) {
        return Err(format!(
            "{name:?} is reserved: /proc/sys/net/ipv4/conf/{name} stands for all interfaces, and the kernel refuses the name"
        ));
    }
    Ok(())
}

/// Host, namespace (and lab) names: the same alphabet as interface names,
/// up to `max` bytes. They become file names (`/run/netns/<ns>`, the state
/// file, dnsmasq's directory) and appear in ownership marks and comments.
pub fn check_plain_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(reason) = bad_char(what, name) {
        return Err(reason);
    }
    if name.len() > max {
        return Err(format!("{what} {} is longer than {max} bytes", shown(name)));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} {name:?} is not allowed"));
    }
    if let Some(reason) = bad_start(what, name) {
        return Err(reason);
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
    fn ifnames_keep_to_the_alphabet() {
        for good in ["eth0", "enp3s0f1", "br-pr", "veth15.0", "vlan_100", "0up", "Br.X-y_z"] {
            assert_eq!(check_ifname(good), Ok(()), "{good:?}");
        }
        // Everything a consumer of names treats specially, and more.
        let special = "*+%\"\\'&<>;#!$`=,@|(){}[]?~^";
        for c in special.chars() {
            let name = format!("gw{c}x");
            let e = check_ifname(&name).unwrap_err();
            assert!(e.contains(&format!("contains {c:?}")) && e.contains(ALPHABET), "{name:?}: {e}");
        }
        assert!(check_ifname("gw*").unwrap_err().contains("a wildcard in nft and dnsmasq"));
        assert!(check_ifname("eth+").unwrap_err().contains("a wildcard in iptables"));
        assert!(check_ifname("br%d").unwrap_err().contains("number of its choosing"));
        for bad in ["-x", "_x", ".x"] {
            assert!(check_ifname(bad).unwrap_err().contains("starts with"), "{bad:?}");
        }
        for reserved in ["all", "default"] {
            assert!(check_ifname(reserved).unwrap_err().contains("reserved"), "{reserved:?}");
        }
        assert!(check_ifname("All").is_ok());
    }

    #[test]
    fn hidden_and_foreign_characters_are_named_not_shown() {
        let cases = [
            ("br\u{202e}x", "contains U+202E RIGHT-TO-LEFT OVERRIDE"),
            ("br\u{200b}x", "contains U+200B ZERO WIDTH SPACE"),
            ("br\u{2066}x", "contains U+2066 LEFT-TO-RIGHT ISOLATE"),
            ("br\u{feff}", "contains U+FEFF ZERO WIDTH NO-BREAK SPACE"),
            ("br\u{a0}x", "contains U+00A0 NO-BREAK SPACE"),
            ("br\u{1b}x", "contains U+001B ESCAPE"),
            ("br\u{7}x", "contains U+0007 (a control character)"),
            // Cyrillic 'а', which looks like the ASCII letter.
            ("br-\u{430}", "contains U+0430 'а' (not ASCII)"),
            ("br\u{2603}", "contains U+2603 (not ASCII)"),
        ];
        for (name, want) in cases {
            let e = check_ifname(name).unwrap_err();
            assert!(e.contains(want), "{name:?}: {e}");
            assert!(!e.chars().any(is_hidden), "raw hidden character in {e:?}");
        }
    }

    #[test]
    fn plain_names_share_the_alphabet() {
        assert_eq!(check_plain_name("host name", "host-a.example_1", 64), Ok(()));
        for bad in ["-h", ".h", "h@x", "h:x", "h*", "h\u{202e}"] {
            assert!(check_plain_name("host name", bad, 64).is_err(), "{bad:?}");
        }
        assert!(check_plain_name("namespace name", "ns@1", 64).unwrap_err().contains("dnsmasq file names"));
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
