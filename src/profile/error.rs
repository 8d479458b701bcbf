//! Profile errors that point at the file, line:column and key.

use std::fmt;
use std::ops::Range;

use super::names::is_hidden;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProfileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `segment[0].vni`; empty when the error is not
    /// about one key (unreadable file, syntax error before any key).
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.reason)
    }
}

/// All errors found in one profile, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileErrors {}

/// Maps byte offsets of a source text to 1-based line and column (columns
/// count characters, as editors do).
pub struct Locator<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Locator { text, line_starts }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|s| *s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let col = self.text.get(start..offset).map(|s| s.chars().count()).unwrap_or(offset - start);
        (line, col + 1)
    }

    pub fn error(&self, file: &str, span: Range<usize>, key: &str, reason: impl Into<String>) -> ProfileError {
        let (line, column) = self.line_col(span.start);
        ProfileError { file: file.to_string(), line, column, key: visible(key), reason: visible(&reason.into()) }
    }
}

/// An error about the file as a whole (cannot be read, is not a regular
/// file, is too large): located at 1:1 with no key, so every error keeps
/// the line >= 1, column >= 1 contract.
pub fn file_error(file: &str, reason: impl Into<String>) -> ProfileError {
    Locator::new("").error(file, 0..0, "", reason)
}

/// Escapes control, invisible and text-reordering characters (`\u{202e}`).
/// Keys and parser messages can quote the profile verbatim (a quoted TOML
/// key may hold any character), and an error must not rewrite the
/// operator's terminal or read differently from what the file says.
fn visible(s: &str) -> String {
    if !s.chars().any(is_hidden) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let l = Locator::new("a = 1\nbé = 2\n");
        assert_eq!(l.line_col(0), (1, 1));
        assert_eq!(l.line_col(6), (2, 1));
        assert_eq!(l.line_col(9), (2, 3)); // after the 2-byte é
        assert_eq!(l.line_col(999), (3, 1));
    }

    #[test]
    fn keys_and_reasons_never_carry_hidden_characters() {
        let e = Locator::new("x").error("p.toml", 0..0, "a\u{202e}b", "unknown field `\u{1b}[2J`");
        assert_eq!(e.key, "a\\u{202e}b");
        assert_eq!(e.reason, "unknown field `\\u{1b}[2J`");
        assert_eq!(Locator::new("").error("p.toml", 0..0, "", "é ok").reason, "é ok");
    }
}
