//! vxrouter: per-host TOML profiles → bridges, VXLAN segments and a router
//! namespace with source NAT, converged over netlink.
//!
//! The pipeline (docs/design.md): `facts` → `desired` (pure) → `scope` →
//! `observe` → `plan` (each kind in `kinds/` compares its own objects) →
//! `apply` (steps with their inverses in the `journal`) → verify; `engine`
//! runs it for each command.

pub mod apply;
pub mod cli;
pub mod confirm;
pub mod daemon;
pub mod desired;
pub mod engine;
pub mod error;
pub mod facts;
pub mod firewall;
pub mod fsutil;
pub mod garp;
pub mod ha;
pub mod journal;
pub mod kinds;
pub mod lock;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod observe;
pub mod output;
pub mod plan;
pub mod preflight;
pub mod profile;
pub mod recover;
pub mod render;
pub mod scope;
pub mod signals;
pub mod state;
pub mod status;
pub mod testhooks;
