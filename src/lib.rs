//! vxrouter: per-host TOML profiles → bridges, VXLAN segments and a router
//! namespace with source NAT, converged over netlink.

pub mod desired;
pub mod firewall;
pub mod lock;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod profile;
pub mod state;
pub mod apply;
pub mod observe;
pub mod plan;
pub mod engine;
pub mod preflight;
pub mod lab;
