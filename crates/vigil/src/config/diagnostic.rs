//! Config errors that point at the exact place in the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one file, with the file's text to show where.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub text: String,
    pub errors: Vec<ConfigError>,
}

/// 1-based line and column of a byte offset (column counts characters, not bytes).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

impl ConfigErrors {
    /// `file:line:col: message` for each error, as tests and tools want it.
    pub fn locations(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| {
                let (l, c) = line_col(&self.text, e.span.start);
                format!("{}:{l}:{c}: {}", self.path.display(), e.message)
            })
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            render_one(f, &self.path, &self.text, e)?;
            writeln!(f)?;
        }
        let n = self.errors.len();
        write!(
            f,
            "{n} error{} in {}; nothing was applied",
            if n == 1 { "" } else { "s" },
            self.path.display()
        )
    }
}

impl std::error::Error for ConfigErrors {}

fn render_one(f: &mut fmt::Formatter<'_>, path: &Path, text: &str, e: &ConfigError) -> fmt::Result {
    let (line, col) = line_col(text, e.span.start);
    writeln!(f, "error: {}", e.message)?;
    let gutter = line.to_string().len();
    writeln!(f, "{:gutter$}--> {}:{line}:{col}", "", path.display())?;
    if let Some(source_line) = text.lines().nth(line - 1) {
        let shown: String = source_line.chars().take(120).collect();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{line} | {shown}")?;
        // Underline the span on its first line.
        let line_len = source_line.chars().count();
        let span_chars = text
            .get(e.span.clone())
            .map(|s| s.lines().next().unwrap_or("").chars().count())
            .unwrap_or(1)
            .clamp(1, line_len.saturating_sub(col - 1).max(1));
        writeln!(
            f,
            "{:gutter$} | {}{}",
            "",
            " ".repeat(col - 1),
            "^".repeat(span_chars)
        )?;
    }
    if let Some(hint) = &e.hint {
        writeln!(f, "{:gutter$} = hint: {hint}", "")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
        let second_eq = text.rfind('=').unwrap();
        assert_eq!(line_col(text, second_eq), (2, 4));
    }
}
