//! The policy error type and byte-offset to line/column conversion.

/// A policy that cannot be used. Renders as `FILE:LINE:COL: message` (1-based,
/// columns in characters) so editors can jump to it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}:{line}:{col}: {message}")]
    Invalid {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    // The io error is part of the message rather than a `source`, so a
    // caller printing the error chain does not print it twice.
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
}

/// Where and what, for tests that check an error's place; the CLI prints
/// the Display form.
#[cfg(test)]
impl PolicyError {
    /// 1-based line, `None` for a read error.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Invalid { line, .. } => Some(*line),
            PolicyError::Read { .. } => None,
        }
    }

    /// 1-based column (in characters), `None` for a read error.
    pub fn col(&self) -> Option<usize> {
        match self {
            PolicyError::Invalid { col, .. } => Some(*col),
            PolicyError::Read { .. } => None,
        }
    }

    /// The message without the location prefix.
    pub fn message(&self) -> String {
        match self {
            PolicyError::Invalid { message, .. } => message.clone(),
            PolicyError::Read { error, .. } => format!("cannot read: {error}"),
        }
    }
}

/// The text being parsed, for turning spans into positions.
pub(super) struct Doc<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Doc<'_> {
    /// 1-based (line, column) of a byte offset. Offsets past the end or inside
    /// a character are clamped rather than trusted.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    pub fn error_at(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        let (line, col) = self.line_col(offset);
        PolicyError::Invalid {
            file: self.file.to_owned(),
            line,
            col,
            message: message.into(),
        }
    }

    pub fn toml_error(&self, e: &toml::de::Error) -> PolicyError {
        // toml gives a span for every syntax and serde error it produces; the
        // start of the document is the least bad place for one without.
        let offset = e.span().map_or(0, |s| s.start);
        self.error_at(offset, e.message().trim_end())
    }
}
