//! The undo journal: each step that changed the host records how to put it
//! back; on failure the records run in reverse order.

use std::fmt::Debug;

use crate::apply::Apply;
use crate::error::Result;

/// The inverse of one step that was applied.
pub trait Undo: Debug + Send {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()>;
}

#[derive(Debug, Default)]
pub struct Journal(Vec<Box<dyn Undo>>);

impl Journal {
    pub fn record(&mut self, u: impl Undo + 'static) {
        self.0.push(Box::new(u));
    }

    pub fn pop(&mut self) -> Option<Box<dyn Undo>> {
        self.0.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
