//! rtnetlink transport (`socket`) and message encoding (`msg`).

pub mod msg;
pub mod socket;

pub use socket::{Netlink, NlError};
