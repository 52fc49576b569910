//! A list of problems found while validating, reported together: every component's
//! config check adds to one, so an operator sees everything wrong at once. A leaf:
//! every layer may use it.

use std::fmt;

/// Problems found while validating, listed together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(Vec<String>);

impl Problems {
    /// A list of one problem.
    pub fn one(problem: impl Into<String>) -> Problems {
        Problems(vec![problem.into()])
    }

    /// Adds one problem.
    pub fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in the order found.
    pub fn list(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
