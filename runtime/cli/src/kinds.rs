//! `squall kinds [KIND]`: the component kinds this binary knows, from its registry.
//!
//! Contract: without KIND, one line per registered kind, sorted: name, role (spout, bolt, or
//! grouping for custom groupings) and its one-line summary. With KIND, that kind's summary,
//! every config key with its default (a TOML value; `(required)` or what leaving it out
//! means, in parentheses) and meaning, and the fields it emits. A kind registered without a
//! [`KindDoc`](squall_api::KindDoc) says so. An unknown KIND is a one-line error listing the
//! known kinds. Everything comes from the registry, so it describes the binary that runs.

use std::fmt::Write;

use squall_api::Registry;

const UNDOCUMENTED: &str = "(no description registered)";

/// Every kind, one line each.
pub fn list(registry: &Registry) -> String {
    let rows: Vec<(&str, String, &str)> = registry
        .kinds()
        .map(|(kind, role)| (kind, role.to_string(), registry.doc(kind).map_or(UNDOCUMENTED, |d| d.summary)))
        .chain(registry.grouping_kinds().map(|kind| (kind, "grouping".to_string(), UNDOCUMENTED)))
        .collect();
    let width = rows.iter().map(|(kind, _, _)| kind.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (kind, role, summary) in rows {
        let _ = writeln!(text, "{kind:<width$}  {role:<8}  {summary}");
    }
    text
}

/// One kind in full; an unknown kind is the error line.
pub fn describe(registry: &Registry, kind: &str) -> Result<String, String> {
    let Some(role) = registry.role(kind) else {
        let known: Vec<&str> = registry.kinds().map(|(k, _)| k).collect();
        return Err(format!("unknown kind \"{kind}\"; known kinds: {}", known.join(", ")));
    };
    let mut text = String::new();
    let Some(doc) = registry.doc(kind) else {
        let _ = writeln!(text, "{kind} ({role}): {UNDOCUMENTED}");
        return Ok(text);
    };
    let _ = writeln!(text, "{kind} ({role}): {}", doc.summary);
    if doc.config.is_empty() {
        let _ = writeln!(text, "\nconfig: none (any key is an error)");
    } else {
        let _ = writeln!(text, "\nconfig (key, default, meaning):");
        let defaults: Vec<String> = doc.config.iter().map(|k| k.default.to_string()).collect();
        let name_width = doc.config.iter().map(|k| k.name.len()).max().unwrap_or(0);
        let default_width = defaults.iter().map(String::len).max().unwrap_or(0).min(32);
        for (key, default) in doc.config.iter().zip(&defaults) {
            let _ = writeln!(text, "  {:<name_width$}  {default:<default_width$}  {}", key.name, key.meaning);
        }
    }
    let _ = writeln!(text, "\nemits: {}", doc.emits);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::{
        async_trait, BasicBolt, BasicCollector, BoxError, ConfigKey, Emits, KindDoc, NoConfig,
        OutputDeclarer, Tuple,
    };

    struct Nop;

    #[async_trait]
    impl BasicBolt for Nop {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["word"]);
        }
        async fn execute(&mut self, _: &Tuple, _: &mut BasicCollector<'_>) -> Result<(), BoxError> {
            Ok(())
        }
    }

    const NOP: KindDoc = KindDoc {
        summary: "Does nothing.",
        config: &[ConfigKey::required("path", "\"x\"", "where"), ConfigKey::value("suffix", "\"!\"", "what")],
        emits: Emits::Fields(&["word"]),
    };

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry
            .basic_bolt("nop", |_: NoConfig| Ok(Nop))
            .basic_bolt("bare", |_: NoConfig| Ok(Nop))
            .describe("nop", NOP);
        registry
    }

    #[test]
    fn lists_every_kind_with_role_and_summary() {
        assert_eq!(
            list(&registry()),
            "bare  bolt      (no description registered)\nnop   bolt      Does nothing.\n"
        );
    }

    #[test]
    fn describes_keys_defaults_and_fields() {
        let text = describe(&registry(), "nop").unwrap();
        assert_eq!(
            text,
            "nop (bolt): Does nothing.\n\nconfig (key, default, meaning):\n  path    (required)  where\n  \
             suffix  \"!\"         what\n\nemits: word\n"
        );
    }

    #[test]
    fn unknown_kind_is_one_line_listing_the_known() {
        let e = describe(&registry(), "nope").unwrap_err();
        assert_eq!(e, "unknown kind \"nope\"; known kinds: bare, nop");
    }

    #[test]
    fn an_undocumented_kind_says_so() {
        assert_eq!(describe(&registry(), "bare").unwrap(), "bare (bolt): (no description registered)\n");
    }
}
