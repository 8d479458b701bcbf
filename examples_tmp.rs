fn dump(t: &toml::de::DeTable, depth: usize) {
    for (k, v) in t.iter() {
        println!("{}{} key{:?} val{:?}", " ".repeat(depth*2), k.get_ref(), k.span(), v.span());
        match v.get_ref() {
            toml::de::DeValue::Table(t) => dump(t, depth+1),
            toml::de::DeValue::Array(a) => for i in a.iter() { println!("{} item {:?}", " ".repeat(depth*2), i.span()); if let toml::de::DeValue::Table(t) = i.get_ref() { dump(t, depth+2) } },
            _ => {}
        }
    }
}
fn main() {
    let s = "[host]\nname = \"a\"\n\n[[segment]]\nbridge = \"b\"\nvni = \"x\"\n[[segment]]\nbridge=\"c\"\n[router]\nnamespace=\"n\"\n[router.public]\nbridge=\"x\"\n";
    let d = toml::de::DeTable::parse(s).unwrap();
    dump(d.get_ref(), 0);
    println!("vni at {:?}", s.find("\"x\""));
}
