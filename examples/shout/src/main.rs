//! The README's "Writing a bolt" example: a project of your own, whole — one bolt kind,
//! `shout`, registered beside the shipped kinds, and the `squall` command line around them.
//! The workspace builds and clippy-checks it, and an end-to-end test runs it.
//!
//! Run it like the `squall` binary: `cargo run -p shout -- local examples/shout/shout.toml`;
//! `shout kinds` lists `shout` among the shipped kinds.

use serde::Deserialize;
use squall_api::{
    async_trait, values, BasicBolt, BasicCollector, BoxError, ConfigKey, Emits, KindDoc, OutputDeclarer,
    Tuple,
};

/// Emits each word with a suffix; `config = { suffix = "?" }` in the topology file.
struct Shout {
    suffix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShoutConfig {
    #[serde(default = "bang")]
    suffix: String,
}

fn bang() -> String {
    "!".into()
}

#[async_trait]
impl BasicBolt for Shout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }

    // A BasicBolt's emits are anchored to the input, which is acked when this returns Ok
    // and failed (so its spout replays it) when it returns Err.
    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        let word = input.get_str("word")?;
        out.emit(values![format!("{word}{}", self.suffix)])?;
        Ok(())
    }
}

/// What `shout kinds shout` prints (optional).
const SHOUT: KindDoc = KindDoc {
    summary: "Emits each word with a suffix.",
    config: &[ConfigKey::value("suffix", r#""!""#, "the text appended")],
    emits: Emits::Fields(&["word"]),
};

fn main() -> std::process::ExitCode {
    let mut registry = squall_topologies::registry(); // the shipped kinds, if you want them
    registry.basic_bolt("shout", |c: ShoutConfig| Ok(Shout { suffix: c.suffix })).describe("shout", SHOUT);
    squall_runtime::cli::main(registry)
}
