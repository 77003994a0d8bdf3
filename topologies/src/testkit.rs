//! Test helpers: fake collectors that record what a component did, and builders that go
//! through the registry as the runtime would.
//!
//! Contract: [`FakeSpoutCollector`] and [`FakeBoltCollector`] accept every emit (unless told
//! to refuse) and record it; [`run_basic`] runs a basic bolt's `execute` and acks or fails the
//! input the way the runtime does.

use squall_api::{
    BasicBolt, BasicCollector, Bolt, BoltCollector, BoxError, Component, DynAggregate, EmitError, MessageId,
    Spout, SpoutCollector, TaskId, Tuple, Value, Values,
};

/// One tuple a spout emitted.
#[derive(Debug)]
pub struct SpoutEmit {
    pub stream: String,
    pub values: Values,
    pub msg_id: Option<MessageId>,
}

/// Records a spout's emits and reported errors.
#[derive(Debug, Default)]
pub struct FakeSpoutCollector {
    pub emits: Vec<SpoutEmit>,
    pub errors: Vec<String>,
    /// Refuse every emit with an error.
    pub refuse: bool,
}

impl FakeSpoutCollector {
    /// The message ids emitted so far, as integers.
    pub fn ids(&self) -> Vec<i64> {
        self.emits.iter().map(|e| e.msg_id.as_ref().and_then(Value::as_i64).expect("an int id")).collect()
    }

    /// The first value of each emit, as a string.
    pub fn strings(&self) -> Vec<&str> {
        self.emits.iter().map(|e| e.values[0].as_str().expect("a string")).collect()
    }
}

impl SpoutCollector for FakeSpoutCollector {
    fn emit_to(
        &mut self,
        stream: &str,
        values: Values,
        msg_id: Option<MessageId>,
        _direct_task: Option<TaskId>,
    ) -> Result<(), EmitError> {
        if self.refuse {
            return Err(EmitError::UnknownStream { component: "test".into(), stream: stream.into() });
        }
        self.emits.push(SpoutEmit { stream: stream.to_string(), values, msg_id });
        Ok(())
    }

    fn report_error(&mut self, error: &str) {
        self.errors.push(error.to_string());
    }
}

/// One tuple a bolt emitted, with the values of the inputs it was anchored to.
#[derive(Debug)]
pub struct BoltEmit {
    pub stream: String,
    pub anchors: Vec<Vec<Value>>,
    pub values: Values,
}

/// Records a bolt's emits, acks, fails and reported errors.
#[derive(Debug, Default)]
pub struct FakeBoltCollector {
    pub emits: Vec<BoltEmit>,
    pub acked: Vec<Tuple>,
    pub failed: Vec<Tuple>,
    pub errors: Vec<String>,
}

impl FakeBoltCollector {
    /// The values of every emit.
    pub fn emitted(&self) -> Vec<Vec<Value>> {
        self.emits.iter().map(|e| e.values.to_vec()).collect()
    }
}

impl BoltCollector for FakeBoltCollector {
    fn emit_to(
        &mut self,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
        _direct_task: Option<TaskId>,
    ) -> Result<(), EmitError> {
        self.emits.push(BoltEmit {
            stream: stream.to_string(),
            anchors: anchors.iter().map(|t| t.values().to_vec()).collect(),
            values,
        });
        Ok(())
    }

    fn ack(&mut self, input: Tuple) {
        self.acked.push(input);
    }

    fn fail(&mut self, input: Tuple) {
        self.failed.push(input);
    }

    fn reset_timeout(&mut self, _input: &Tuple) {}

    fn report_error(&mut self, error: &str) {
        self.errors.push(error.to_string());
    }
}

/// Runs a basic bolt on one input as the runtime does: ack on `Ok`, fail on `Err`.
pub async fn run_basic<B: BasicBolt + ?Sized>(
    bolt: &mut B,
    out: &mut FakeBoltCollector,
    input: Tuple,
) -> Result<(), BoxError> {
    let result = bolt.execute(&input, &mut BasicCollector::new(out, &input)).await;
    match result {
        Ok(()) => out.acked.push(input),
        Err(_) => out.failed.push(input),
    }
    result
}

/// Parses a topology file's `config` table.
pub fn config(text: &str) -> toml::Table {
    toml::from_str(text).expect("valid TOML")
}

/// Builds a component of `kind` through the shipped registry.
pub fn build(kind: &str, config_text: &str) -> Result<Component, BoxError> {
    crate::registry().build(kind, &config(config_text))
}

/// Builds a spout of `kind` through the shipped registry.
pub fn spout(kind: &str, config_text: &str) -> Box<dyn Spout> {
    match build(kind, config_text).expect("builds") {
        Component::Spout(s) => s,
        _ => panic!("{kind} is not a spout"),
    }
}

/// Builds a plain bolt of `kind` through the shipped registry.
pub fn bolt(kind: &str, config_text: &str) -> Box<dyn Bolt> {
    match build(kind, config_text).expect("builds") {
        Component::Bolt(b) => b,
        _ => panic!("{kind} is not a plain bolt"),
    }
}

/// Builds a basic bolt of `kind` through the shipped registry.
pub fn basic_bolt(kind: &str, config_text: &str) -> Box<dyn BasicBolt> {
    match build(kind, config_text).expect("builds") {
        Component::BasicBolt(b) => b,
        _ => panic!("{kind} is not a basic bolt"),
    }
}

/// Builds an aggregate bolt of `kind` through the shipped registry: its `WindowAggregate`,
/// type-erased, to call as the runtime's window executor does.
pub fn aggregate(kind: &str, config_text: &str) -> Box<dyn DynAggregate> {
    match build(kind, config_text).expect("builds") {
        Component::Aggregate(a) => a,
        _ => panic!("{kind} is not an aggregate bolt"),
    }
}

/// The error building `kind` from `config_text` gives.
pub fn build_error(kind: &str, config_text: &str) -> String {
    match build(kind, config_text) {
        Ok(_) => panic!("{kind} accepted {config_text:?}"),
        Err(e) => e.to_string(),
    }
}

/// Calls `next_tuple` `calls` times, acking each new emit at once (as with acking off).
pub async fn drain_acking(spout: &mut dyn Spout, out: &mut FakeSpoutCollector, calls: usize) {
    for _ in 0..calls {
        let before = out.emits.len();
        spout.next_tuple(out).await.expect("next_tuple");
        for emit in &out.emits[before..] {
            if let Some(id) = &emit.msg_id {
                spout.ack(id.clone()).await;
            }
        }
    }
}
