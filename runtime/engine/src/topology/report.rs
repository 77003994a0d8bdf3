//! Collecting mistakes and placing them in the file the user wrote.
//!
//! Contract: parsing and validation work on the substituted text and record each mistake as
//! a byte span in it with a one-line message ([`Problems`]). [`Problems::into_diagnostics`]
//! maps every span back through the substitution to a 1-based line and column (in
//! characters) of the original file and returns the mistakes sorted by position, duplicates
//! removed. [`line_col`] never panics, whatever the offset.

use std::ops::Range;

use super::subst::Substituted;
use super::{Diagnostic, Diagnostics};

/// A byte range in the substituted text.
pub(crate) type Span = Range<usize>;

/// 1-based line and column (in characters) of byte `offset` in `text`; an offset past the
/// end or inside a character is moved back to the nearest character boundary.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Mistakes found so far, by where they are in the substituted text.
pub(crate) struct Problems<'s> {
    subst: &'s Substituted,
    found: Vec<(usize, String)>,
}

impl<'s> Problems<'s> {
    pub(crate) fn new(subst: &'s Substituted) -> Self {
        Problems { subst, found: Vec::new() }
    }

    /// Records a mistake at the start of `span`. A message spanning several lines (from a
    /// component's factory, say) is joined into one.
    pub(crate) fn error(&mut self, span: &Span, message: impl Into<String>) {
        let message = message.into();
        let message = if message.contains('\n') {
            message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
        } else {
            message
        };
        self.found.push((span.start, message));
    }

    /// "line L, col C" of `span` in the original file, for messages that point elsewhere.
    pub(crate) fn position(&self, span: &Span) -> String {
        let (line, col) = self.subst.line_col(span.start);
        format!("line {line}, col {col}")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// How many mistakes were recorded so far (to tell whether a part had any).
    pub(crate) fn len(&self) -> usize {
        self.found.len()
    }

    /// Every mistake as a diagnostic of `file`, in file order. One pass over the file places
    /// them all, however many there are.
    pub(crate) fn into_diagnostics(self, file: &str) -> Diagnostics {
        let original = self.subst.original();
        let mut found: Vec<(usize, String)> = self
            .found
            .into_iter()
            .map(|(offset, message)| (self.subst.original_offset(offset), message))
            .collect();
        found.sort_by_key(|(offset, _)| *offset);
        let mut cursor = Cursor::default();
        let mut diagnostics: Vec<Diagnostic> = found
            .into_iter()
            .map(|(offset, message)| {
                let (line, col) = cursor.advance(original, offset);
                Diagnostic { file: file.to_string(), line, col, message }
            })
            .collect();
        diagnostics.dedup();
        Diagnostics(diagnostics)
    }
}

/// A position moving forward through a text, for placing many offsets in one pass.
#[derive(Default)]
struct Cursor {
    /// A character boundary of the text.
    at: usize,
    /// 0-based line and column (in characters) of `at`.
    line: usize,
    col: usize,
}

impl Cursor {
    /// 1-based line and column of `offset` (at or after the last one asked, else the last
    /// one's), moved back to a character boundary and to at most the end of `text`.
    fn advance(&mut self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        if offset > self.at {
            for c in text[self.at..offset].chars() {
                if c == '\n' {
                    self.line += 1;
                    self.col = 0;
                } else {
                    self.col += 1;
                }
            }
            self.at = offset;
        }
        (self.line + 1, self.col + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn a_cursor_places_offsets_as_line_col_does() {
        let text = "a = 1\nbé = \"ü\"\n\nx";
        let mut cursor = super::Cursor::default();
        for offset in [0, 0, 3, 6, 12, 14, 15, 17, 18, 1000] {
            assert_eq!(cursor.advance(text, offset), line_col(text, offset), "offset {offset}");
        }
    }

    #[test]
    fn counts_columns_in_characters() {
        let text = "a = 1\nbé = \"ü\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(text, 12), (2, 6));
        assert_eq!(line_col(text, 14), (2, 7)); // inside "ü": moved back to its start
        assert_eq!(line_col(text, 1000), (3, 1));
        assert_eq!(line_col("", 3), (1, 1));
    }
}
