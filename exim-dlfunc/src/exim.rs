//! What the library asks of the Exim process it is loaded into: expanding a variable and
//! writing the main log.
//!
//! `ffi` implements this with Exim's own `expand_string` and `log_write`, found at run
//! time; tests use a fake. Both services are optional: outside Exim (unit tests, a
//! `dlopen` from another program) nothing is expanded and nothing is logged.

/// The Exim services the library uses.
pub trait Exim {
    /// Expands `expression` (e.g. `$sender_helo_name`) and returns at most `max_bytes`
    /// bytes of the result, cut at a character boundary; `None` when the expansion failed,
    /// was not UTF-8, or Exim is not there.
    fn expand(&self, expression: &str, max_bytes: usize) -> Option<String>;

    /// Writes one line, prefixed `exim-access: `, to Exim's main log.
    fn log(&self, message: &str);
}

/// A fake Exim for tests: fixed expansions and a record of log lines.
#[cfg(test)]
#[derive(Default)]
pub struct FakeExim {
    /// Expression and result pairs that `expand` knows.
    pub values: Vec<(&'static str, &'static str)>,
    /// Every line logged so far.
    pub logged: std::cell::RefCell<Vec<String>>,
}

#[cfg(test)]
impl FakeExim {
    /// A fake that answers `values` and logs into memory.
    pub fn with(values: &[(&'static str, &'static str)]) -> Self {
        FakeExim {
            values: values.to_vec(),
            logged: Default::default(),
        }
    }

    /// The lines logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logged.borrow().clone()
    }
}

#[cfg(test)]
impl Exim for FakeExim {
    fn expand(&self, expression: &str, max_bytes: usize) -> Option<String> {
        let (_, value) = self.values.iter().find(|(e, _)| *e == expression)?;
        let mut end = value.len().min(max_bytes);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        Some(value[..end].to_string())
    }

    fn log(&self, message: &str) {
        self.logged
            .borrow_mut()
            .push(format!("exim-access: {message}"));
    }
}
