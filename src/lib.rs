//! vxrouter: per-host TOML profiles → bridges, VXLAN segments and a router
//! namespace with source NAT, converged over netlink.

pub mod apply;
pub mod cli;
pub mod desired;
pub mod dhcp;
pub mod engine;
pub mod firewall;
pub mod garp;
pub mod golden;
pub mod lab;
pub mod lock;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod observe;
pub mod output;
pub mod plan;
pub mod preflight;
pub mod profile;
pub mod render;
pub mod state;
pub mod testhooks;
