//! Kernel access over rtnetlink: the synchronous transport (`socket`), the
//! typed operations everything else uses (`ops`), message encoding
//! (`msg`, private) and one socket per namespace a run touches (`session`).

mod linkdump;
mod msg;
pub mod nfgen;
pub mod ops;
pub mod session;
pub mod socket;

pub use ops::{CreateCtx, IfExists, Ipv4Conf, LinkRef, SetLink};
pub use session::Session;
pub use socket::{Netlink, NlError};
