//! `${VAR}` and `${VAR:-default}` substitution (Storm Flux's property substitution).
//!
//! Contract: [`substitute`] replaces every `${VAR}` with the value `env` gives for `VAR`, and
//! every `${VAR:-default}` with that value, or with `default` when `VAR` is unset or empty
//! (as a shell does). It works on the raw text before TOML parsing, so a reference may stand
//! anywhere a value can: `parallelism = ${SPLITTERS:-2}` as well as `topic = "${TOPIC}"`.
//! References inside TOML comments are left alone. A variable name is ASCII letters, digits
//! and `_`, not starting with a digit; a reference ends at the first `}` and may not span
//! lines; a default may not contain another reference.
//!
//! A reference to an unset variable without a default, an unterminated `${`, or a malformed
//! reference is a [`Diagnostic`](super::Diagnostic) at the `${`; every one in the file is
//! reported. On success the returned [`Substituted`] maps any offset in the new text back to
//! the original, so that later diagnostics point at what the user wrote: into a default as
//! written, and at the `${` for a value that came from the environment.

use super::report::line_col;
use super::{Diagnostic, Diagnostics};

/// A text after substitution, with the way back to the original.
#[derive(Debug, Clone)]
pub struct Substituted {
    original: String,
    text: String,
    /// Consecutive pieces of `text`, in order, covering all of it (empty pieces left out).
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    text_start: usize,
    original_start: usize,
    len: usize,
    /// Copied from the original (verbatim text or a default), so that offsets inside map one
    /// to one; otherwise a value from the environment, all of whose offsets map to its `${`.
    copied: bool,
}

impl Substituted {
    /// The text with every reference replaced.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text as written.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The byte offset in the original text that produced byte `offset` of [`Self::text`].
    /// The end of the text (or beyond) maps to the end of the original.
    pub fn original_offset(&self, offset: usize) -> usize {
        if offset >= self.text.len() {
            return self.original.len();
        }
        let after = self.segments.partition_point(|s| s.text_start <= offset);
        match after.checked_sub(1).and_then(|i| self.segments.get(i)) {
            Some(s) if s.copied => s.original_start + (offset - s.text_start).min(s.len),
            Some(s) => s.original_start,
            None => 0,
        }
    }

    /// 1-based line and column (in characters) in the original text of byte `offset` of
    /// [`Self::text`].
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.original, self.original_offset(offset))
    }

    fn push(&mut self, original_start: usize, piece: &str, copied: bool) {
        if piece.is_empty() {
            return;
        }
        self.segments.push(Segment { text_start: self.text.len(), original_start, len: piece.len(), copied });
        self.text.push_str(piece);
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in `source` (the contents of `file`) with values
/// from `env`. See the module docs.
pub fn substitute(
    file: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, Diagnostics> {
    let mut out = Substituted {
        original: source.to_string(),
        text: String::with_capacity(source.len()),
        segments: Vec::new(),
    };
    let mut errors: Vec<(usize, String)> = Vec::new();
    let mut copied_up_to = 0;
    let mut lexer = Lexer::new(source);

    while let Some(at) = lexer.next_reference() {
        out.push(copied_up_to, &source[copied_up_to..at], true);
        let reference = Reference::read(source, at);
        match reference.resolve(env) {
            Ok(Replacement::Env(value)) => out.push(at, &value, false),
            Ok(Replacement::Default { at, text }) => out.push(at, text, true),
            Err(message) => errors.push((at, message)),
        }
        copied_up_to = reference.end;
        lexer.skip_to(reference.end);
    }
    out.push(copied_up_to, &source[copied_up_to..], true);

    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Diagnostics(
            errors
                .into_iter()
                .map(|(at, message)| {
                    let (line, col) = line_col(source, at);
                    Diagnostic { file: file.to_string(), line, col, message }
                })
                .collect(),
        ))
    }
}

/// Where the lexer is in the TOML text: only enough of TOML to tell comments from the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Comment,
    BasicString,
    MultiBasicString,
    LiteralString,
    MultiLiteralString,
}

/// Finds the `${` that are not inside a comment.
struct Lexer<'s> {
    bytes: &'s [u8],
    pos: usize,
    state: State,
}

impl<'s> Lexer<'s> {
    fn new(source: &'s str) -> Self {
        Lexer { bytes: source.as_bytes(), pos: 0, state: State::Normal }
    }

    fn starts_with(&self, s: &[u8]) -> bool {
        self.bytes.get(self.pos..).is_some_and(|rest| rest.starts_with(s))
    }

    /// Consumes a closing `"""` or `'''` and up to two more quotes, which TOML counts as
    /// content before the closing delimiter.
    fn close_multiline(&mut self, quote: u8) {
        self.pos += 3;
        for _ in 0..2 {
            if self.bytes.get(self.pos) == Some(&quote) {
                self.pos += 1;
            }
        }
        self.state = State::Normal;
    }

    /// The byte offset of the next `${` outside comments. Every delimiter looked at is
    /// ASCII, so every offset returned is a character boundary.
    fn next_reference(&mut self) -> Option<usize> {
        while let Some(&b) = self.bytes.get(self.pos) {
            if b == b'$' && self.state != State::Comment && self.starts_with(b"${") {
                return Some(self.pos);
            }
            match (self.state, b) {
                (State::Normal, b'#') => self.state = State::Comment,
                (State::Normal, b'"') if self.starts_with(b"\"\"\"") => {
                    self.state = State::MultiBasicString;
                    self.pos += 2;
                }
                (State::Normal, b'"') => self.state = State::BasicString,
                (State::Normal, b'\'') if self.starts_with(b"'''") => {
                    self.state = State::MultiLiteralString;
                    self.pos += 2;
                }
                (State::Normal, b'\'') => self.state = State::LiteralString,
                (State::BasicString | State::MultiBasicString, b'\\') => self.pos += 1,
                (State::MultiBasicString, b'"') if self.starts_with(b"\"\"\"") => {
                    self.close_multiline(b'"');
                    continue;
                }
                (State::MultiLiteralString, b'\'') if self.starts_with(b"'''") => {
                    self.close_multiline(b'\'');
                    continue;
                }
                (State::Comment | State::BasicString | State::LiteralString, b'\n')
                | (State::BasicString, b'"')
                | (State::LiteralString, b'\'') => self.state = State::Normal,
                _ => {}
            }
            self.pos += 1;
        }
        None
    }

    fn skip_to(&mut self, pos: usize) {
        self.pos = pos;
    }
}

/// One `${...}` as written.
struct Reference<'s> {
    /// Offset of the `$`.
    at: usize,
    /// Offset just past the reference (past `${` only, when it is unterminated).
    end: usize,
    /// What is between the braces; None if there is no closing brace on the line.
    body: Option<&'s str>,
}

enum Replacement<'s> {
    Env(String),
    /// The default as written, at offset `at` of the original.
    Default {
        at: usize,
        text: &'s str,
    },
}

impl<'s> Reference<'s> {
    /// Reads the reference whose `${` is at `at`.
    fn read(source: &'s str, at: usize) -> Self {
        let body_start = at + 2;
        let rest = source.get(body_start..).unwrap_or("");
        match rest.find(['}', '\n']) {
            Some(len) if rest[len..].starts_with('}') => {
                Reference { at, end: body_start + len + 1, body: Some(&rest[..len]) }
            }
            _ => Reference { at, end: body_start, body: None },
        }
    }

    fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Replacement<'s>, String> {
        let Some(body) = self.body else {
            return Err("unterminated `${`: close the reference with `}` on the same line, \
                        e.g. ${PORT} or ${PORT:-6700}"
                .to_string());
        };
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_variable_name(name) {
            return Err(format!(
                "`${{{body}}}` is not a valid reference: a variable name is letters, digits and \
                 `_`, e.g. ${{PORT}} or ${{PORT:-6700}}"
            ));
        }
        if let Some(default) = default.filter(|d| d.contains("${")) {
            return Err(format!(
                "the default of ${{{name}}} contains another reference (`{default}`), which is \
                 not supported; write the value itself"
            ));
        }
        match (env(name), default) {
            (Some(value), Some(_)) if value.is_empty() => {}
            (Some(value), _) => return Ok(Replacement::Env(value)),
            (None, _) => {}
        }
        match default {
            Some(text) => Ok(Replacement::Default {
                // `${` + name + `:-`
                at: self.at + 2 + name.len() + 2,
                text,
            }),
            None => {
                Err(format!("environment variable {name} is not set; give a default with ${{{name}:-value}}"))
            }
        }
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "WORKERS" => Some("4".to_string()),
            "TOPIC" => Some("events".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn subst(source: &str) -> Result<String, Vec<String>> {
        substitute("t.toml", source, &env)
            .map(|s| s.text().to_string())
            .map_err(|d| d.0.iter().map(|d| format!("{}:{}: {}", d.line, d.col, d.message)).collect())
    }

    #[test]
    fn substitutes_env_with_default() {
        assert_eq!(
            subst("workers = ${WORKERS:-1}\np = ${P:-2}\nt = \"${TOPIC}-x\"\n").as_deref(),
            Ok("workers = 4\np = 2\nt = \"events-x\"\n")
        );
        assert_eq!(subst("a = \"${EMPTY:-d}${EMPTY}\"").as_deref(), Ok("a = \"d\""));
        assert_eq!(subst("a = '${NOPE:-}'").as_deref(), Ok("a = ''"));
        assert_eq!(subst("no refs, just $ and {}").as_deref(), Ok("no refs, just $ and {}"));
    }

    #[test]
    fn reports_unset_env_var() {
        assert_eq!(
            subst("a = 1\nb = ${NOPE}\n"),
            Err(vec!["2:5: environment variable NOPE is not set; give a default with \
                      ${NOPE:-value}"
                .to_string()])
        );
    }

    #[test]
    fn reports_every_bad_reference() {
        let errors = subst("a = ${A B}\nb = ${X\nc = ${}\nd = ${Y:-${Z}}\né = \"${NOPE}\"").unwrap_err();
        let positions: Vec<&str> = errors.iter().map(|e| &e[..e.find(": ").unwrap_or(0)]).collect();
        assert_eq!(positions, ["1:5", "2:5", "3:5", "4:5", "5:6"], "{errors:?}");
        assert!(errors[1].contains("unterminated `${`"), "{errors:?}");
    }

    #[test]
    fn leaves_comments_alone() {
        let source = "# set ${NOPE} to change it\na = \"#${TOPIC}\" # ${NOPE}\nb = '''\n${TOPIC}'''\n";
        assert_eq!(
            subst(source).as_deref(),
            Ok("# set ${NOPE} to change it\na = \"#events\" # ${NOPE}\nb = '''\nevents'''\n")
        );
    }

    #[test]
    fn maps_offsets_back_to_the_original() {
        let source = "w = ${WORKERS}\np = ${P:-22}\nx = 1";
        let s = substitute("t.toml", source, &env).unwrap();
        assert_eq!(s.text(), "w = 4\np = 22\nx = 1");
        // "4" came from the environment: its `${`.
        assert_eq!(s.line_col(4), (1, 5));
        // The second "2" of the default, as written.
        assert_eq!(s.original_offset(11), source.find("22").unwrap() + 1);
        assert_eq!(s.line_col(11), (2, 11));
        // Text after a reference keeps its own place.
        assert_eq!(s.line_col(13), (3, 1));
        assert_eq!(s.line_col(s.text().len()), (3, 6));
    }
}
