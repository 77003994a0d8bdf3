//! `word-count` (basic bolt, no config): counts words and emits `(word, count)` with the
//! updated count for every input.
//!
//! Contract: the word is the input's `word` field, or its first field if it has none; an input
//! whose word is not a string fails. Counts live in this task's memory (use a fields grouping
//! on `word` so each word is counted in one place). Tick tuples are ignored. At cleanup the
//! task prints its totals to stderr, one line:
//! `word-count task 3: 5 words, 42 total: the=12 cow=4 ...` (the top 10 by count, then name).
//! Only a word seen for the first time allocates.

use std::fmt::Write as _;
use std::io::Write as _;

use squall_api::{
    async_trait, values, BasicBolt, BasicCollector, BoxError, OutputDeclarer, TaskId, TopologyContext, Tuple,
};

use crate::fast_hash::FastMap;

/// How many words the cleanup summary lists.
const TOP: usize = 10;

#[derive(Default)]
pub struct WordCount {
    counts: FastMap<String, u64>,
    task: TaskId,
}

impl WordCount {
    /// Adds one to `word`'s count and returns the new count.
    fn count(&mut self, word: &str) -> u64 {
        match self.counts.get_mut(word) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                self.counts.insert(word.to_owned(), 1);
                1
            }
        }
    }

    /// The cleanup line: distinct words, total, and the top words by count, then name.
    fn summary(&self) -> String {
        let total: u64 = self.counts.values().sum();
        let mut line = format!("word-count task {}: {} words, {total} total:", self.task, self.counts.len());
        let mut top: Vec<(&str, u64)> = self.counts.iter().map(|(w, c)| (w.as_str(), *c)).collect();
        let by_count_then_name = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        if top.len() > TOP {
            top.select_nth_unstable_by(TOP, by_count_then_name);
            top.truncate(TOP);
        }
        top.sort_unstable_by(by_count_then_name);
        for (word, count) in top {
            let _ = write!(line, " {word}={count}");
        }
        if self.counts.len() > TOP {
            line.push_str(" ...");
        }
        line
    }
}

#[async_trait]
impl BasicBolt for WordCount {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "count"]);
    }

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        self.task = ctx.task_id();
        Ok(())
    }

    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
        if input.is_tick() {
            return Ok(());
        }
        let field = input.fields().index_of("word").unwrap_or(0);
        let word = input.get_str(field)?;
        let count = self.count(word);
        out.emit(values![word, count])?;
        Ok(())
    }

    async fn cleanup(&mut self) {
        let line = self.summary() + "\n";
        // Best effort: a closed stderr must not panic the task.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{basic_bolt, build_error, run_basic, FakeBoltCollector};
    use squall_api::Value;

    #[tokio::test]
    async fn word_count_counts_per_word() {
        let mut bolt = basic_bolt("word-count", "");
        let mut out = FakeBoltCollector::default();
        for word in ["the", "cow", "the", "moon", "the", "cow"] {
            let input = Tuple::for_test(["word"], values![word]);
            run_basic(bolt.as_mut(), &mut out, input).await.unwrap();
        }
        let counts: Vec<_> = out
            .emitted()
            .into_iter()
            .map(|v| (v[0].as_str().unwrap().to_string(), v[1].as_i64().unwrap()))
            .collect();
        let expected = [("the", 1), ("cow", 1), ("the", 2), ("moon", 1), ("the", 3), ("cow", 2)];
        assert_eq!(counts, expected.map(|(w, c)| (w.to_string(), c)));
        assert!(out.emits.iter().all(|e| e.anchors.len() == 1));
        assert_eq!(out.acked.len(), 6);
    }

    #[tokio::test]
    async fn word_count_reads_word_field_or_else_the_first() {
        let mut bolt = WordCount::default();
        let mut out = FakeBoltCollector::default();
        let named = Tuple::for_test(["n", "word"], values![1, "cow"]);
        let unnamed = Tuple::for_test(["token"], values!["cow"]);
        run_basic(&mut bolt, &mut out, named).await.unwrap();
        run_basic(&mut bolt, &mut out, unnamed).await.unwrap();
        assert_eq!(out.emitted()[1], [Value::from("cow"), Value::from(2)]);
    }

    #[tokio::test]
    async fn word_count_fails_a_non_string_word() {
        let mut out = FakeBoltCollector::default();
        let input = Tuple::for_test(["word"], values![3.5]);
        assert!(run_basic(&mut WordCount::default(), &mut out, input).await.is_err());
        assert_eq!(out.failed.len(), 1);
    }

    #[tokio::test]
    async fn summary_lists_top_words_by_count_then_name() {
        let mut bolt = WordCount::default();
        bolt.prepare(&TopologyContext::for_test("count")).await.unwrap();
        for (word, n) in [("b", 3), ("a", 3), ("c", 5), ("d", 1)] {
            for _ in 0..n {
                bolt.count(word);
            }
        }
        assert_eq!(bolt.summary(), "word-count task 0: 4 words, 12 total: c=5 a=3 b=3 d=1");
        for i in 0..20 {
            bolt.count(&format!("w{i:02}"));
        }
        let summary = bolt.summary();
        assert!(summary.ends_with(": c=5 a=3 b=3 d=1 w00=1 w01=1 w02=1 w03=1 w04=1 w05=1 ..."), "{summary}");
    }

    #[test]
    fn word_count_takes_no_config() {
        let e = build_error("word-count", "top = 5");
        assert!(e.contains("unknown field `top`"), "{e}");
    }
}
