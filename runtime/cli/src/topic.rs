//! `squall broker` (the log over TCP) and `squall topic create|produce|tail|describe|list`.
//!
//! Contract: every `topic` verb works the same against a server (`--broker ADDR`) and against
//! the embedded log of a directory (`--data-dir DIR`, default `$SQUALL_DATA_DIR`, else
//! ./squall-data), through one [`Broker`] handle. Results go to stdout (tail's records,
//! describe's figures, list's names, create's confirmation); produce's one-line summary and
//! the broker's lines go to stderr. Every failure is returned as one line for the caller to
//! print after `error: `.
//!
//! `produce` without `--count` sends one record per stdin line (the line without its line
//! ending is the value; with `--key-separator SEP`, the text before the first SEP is the key
//! and a line without SEP has no key). With `--count N` it generates N records: key `i` as
//! decimal text, value `i` then a repeating printable pattern, `--size` bytes in all. Keyed
//! records go to [`partition_for_key`](squall_broker::partitioner::partition_for_key), others
//! round-robin; records travel in batches, several in flight, and the summary is printed once
//! all are durable.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use squall_broker::log::Log;
use squall_broker::partitioner::Partitioner;
use squall_broker::settings::{self, BrokerSettings};
use squall_broker::{
    server, Broker, BrokerError, FsyncPolicy, NewRecord, Pending, Record, TopicConfig, TopicInfo,
    DEFAULT_FSYNC_INTERVAL_MS,
};
use squall_engine::auth;
use squall_engine::metrics::human;

/// `squall broker`'s flags.
#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// The cluster file whose [broker] table gives the defaults (default: config/cluster.toml
    /// if it exists)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The log's directory (default: [broker] data_dir, else $SQUALL_DATA_DIR, else
    /// ./squall-data)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to listen, host:port (default: [broker] listen, else 127.0.0.1:6650; port 0
    /// picks a free port)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Which log a `topic` verb works on.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A `squall broker` server, host:port
    #[arg(long, value_name = "ADDR")]
    pub broker: Option<String>,
    /// Else the embedded log in this directory (default: $SQUALL_DATA_DIR, else
    /// ./squall-data)
    #[arg(long, value_name = "DIR", conflicts_with = "broker")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic
    Create {
        /// The topic
        name: String,
        /// Partitions
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Roll a partition's segment file once it holds this many bytes (default 64 MiB)
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        segment_bytes: Option<u64>,
        /// Delete a partition's oldest segments while it holds more than this
        #[arg(long, value_name = "BYTES")]
        retention_bytes: Option<u64>,
        /// Delete segments whose newest record is older than this, e.g. 7d, 12h
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        retention: Option<Duration>,
        /// When appends are forced to disk (default: interval)
        #[arg(long, value_enum)]
        fsync: Option<Fsync>,
        /// With --fsync interval: at most this long between fsyncs (default 10)
        #[arg(long, value_name = "MS")]
        fsync_interval_ms: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Append records: one per stdin line, or --count generated ones
    Produce {
        /// The topic
        name: String,
        /// Generate this many records (key: the record number) instead of reading stdin
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// With --count: the bytes of each generated value
        #[arg(long, value_name = "BYTES", requires = "count", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(0..=MAX_VALUE_BYTES))]
        size: u32,
        /// Stdin lines are KEY SEP VALUE: split each at the first SEP
        #[arg(long, value_name = "SEP", conflicts_with = "count", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        key_separator: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Print records as they arrive, like `tail -f`, until Ctrl-C or --count
    Tail {
        /// The topic
        name: String,
        /// Only this partition (default: all)
        #[arg(long, value_name = "P")]
        partition: Option<u32>,
        /// Start at the oldest record (default: at the end, printing only new ones)
        #[arg(long)]
        from_beginning: bool,
        /// Start at this offset (of each partition read)
        #[arg(long, value_name = "OFFSET", conflicts_with = "from_beginning")]
        offset: Option<u64>,
        /// Stop after this many records
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// One JSON object per record: partition, offset, key, value, timestamp
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Partitions, high watermarks, and each consumer group's offsets and lag
    Describe {
        /// The topic
        name: String,
        /// One JSON object: the topic's figures, with each group's lag
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Topic names, one per line
    List {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Interval,
    Never,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 12h, 7d)"))
}

/// Runs `squall broker` until SIGINT or SIGTERM.
pub async fn broker(args: BrokerArgs) -> Result<(), String> {
    let table = settings::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    let settings = BrokerSettings::resolve(table, args.data_dir, args.listen);
    squall_broker::set_data_dir(settings.data_dir.clone());
    // The file's [cluster] secret, else $SQUALL_SECRET, else the default (loopback only).
    let secret = match settings::load_secret(args.config.as_deref()).map_err(|e| e.to_string())? {
        Some(secret) => secret,
        None => std::env::var("SQUALL_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| auth::DEFAULT_SECRET.to_string()),
    };
    if secret.is_empty() {
        return Err("[cluster] secret must not be empty".into());
    }
    if let Some(warning) = auth::check_default_secret(&secret, "squall broker", &settings.listen)? {
        eprintln!("{warning}");
    }
    // `[cluster] tls` of the same file: clients must show a certificate signed by its CA.
    let tls = settings::load_tls(args.config.as_deref()).map_err(|e| e.to_string())?;
    let tls = squall_engine::tls::Tls::load_optional(tls.as_ref()).map_err(|e| e.to_string())?;
    // Listening before anything starts, so that a signal that comes early is not lost.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    let log = Log::shared(&settings.data_dir).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local = listener.local_addr().map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let over = if tls.is_some() { ", over TLS" } else { "" };
    eprintln!("squall broker: listening on {local}, data in {}{over}", settings.data_dir.display());
    let stop = async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    server::serve_tls(log.clone(), listener, auth::Secret::new(&secret), tls, stop).await;
    log.flush().map_err(|e| format!("cannot flush the log: {e}"))?;
    eprintln!("squall broker: stopped");
    Ok(())
}

/// Runs a `squall topic` verb.
pub async fn topic(command: TopicCommand) -> Result<(), String> {
    match run_topic(command).await {
        // `| head`: the reader has all it wants.
        Ok(()) | Err(CliError::StdoutClosed) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

async fn connect(target: &Target) -> Result<Broker, BrokerError> {
    match &target.broker {
        Some(addr) => Broker::connect(addr).await,
        None => {
            if let Some(dir) = &target.data_dir {
                squall_broker::set_data_dir(dir.clone());
            }
            Broker::connect("embedded").await
        }
    }
}

async fn run_topic(command: TopicCommand) -> Result<(), CliError> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            segment_bytes,
            retention_bytes,
            retention,
            fsync,
            fsync_interval_ms,
            target,
        } => {
            let fsync = match (fsync, fsync_interval_ms) {
                (Some(Fsync::Always), None) => FsyncPolicy::Always,
                (Some(Fsync::Never), None) => FsyncPolicy::Never,
                (Some(Fsync::Interval) | None, ms) => {
                    FsyncPolicy::Interval { ms: ms.unwrap_or(DEFAULT_FSYNC_INTERVAL_MS) }
                }
                (Some(_), Some(_)) => {
                    return Err(CliError::Usage("--fsync-interval-ms goes with --fsync interval".into()))
                }
            };
            let retention_secs = match retention {
                Some(d) if d.as_secs() == 0 => {
                    return Err(CliError::Usage("--retention must be at least 1s".into()));
                }
                other => other.map(|d| d.as_secs()),
            };
            let mut config = TopicConfig::new(partitions);
            if let Some(bytes) = segment_bytes {
                config.segment_bytes = bytes;
            }
            config.retention_bytes = retention_bytes;
            config.retention_secs = retention_secs;
            config.fsync = fsync;
            let broker = connect(&target).await?;
            broker.create_topic(&name, config).await?;
            println!("created topic {name} with {partitions} partition{}", plural(partitions.into()));
            Ok(())
        }
        TopicCommand::Produce { name, count, size, key_separator, target } => {
            let broker = connect(&target).await?;
            produce(&broker, &name, count.map(|n| (n, size as usize)), key_separator).await
        }
        TopicCommand::Tail { name, partition, from_beginning, offset, count, json, target } => {
            let broker = connect(&target).await?;
            let start = match (from_beginning, offset) {
                (true, _) => Start::Beginning,
                (false, Some(offset)) => Start::Offset(offset),
                (false, None) => Start::End,
            };
            tail(&broker, &name, partition, start, count, json).await
        }
        TopicCommand::Describe { name, json, target } => {
            let broker = connect(&target).await?;
            let info = broker.describe(&name).await?;
            let text = if json { describe_json(&info)? } else { describe_text(&info) };
            write_stdout(text.as_bytes())
        }
        TopicCommand::List { target } => {
            let broker = connect(&target).await?;
            let mut text = String::new();
            for name in broker.topics().await? {
                text.push_str(&name);
                text.push('\n');
            }
            write_stdout(text.as_bytes())
        }
    }
}

/// How a verb fails; displays as the one line after `error: `.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    #[error("stdout is closed")]
    StdoutClosed,
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Writes to stdout; a closed stdout (`| head`) is [`CliError::StdoutClosed`], which ends the
/// verb quietly.
fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::StdoutClosed),
        Err(e) => Err(CliError::Io(format!("cannot write to stdout: {e}"))),
    }
}

// ---- produce ----------------------------------------------------------------------------

/// A batch is sent once it holds this many records or bytes.
/// The largest generated value: a record of it (with a 20-digit key) fits one frame.
const MAX_VALUE_BYTES: i64 =
    (squall_broker::record::MAX_FRAME_LEN - squall_broker::record::FRAME_HEADER_LEN - 20) as i64;
const BATCH_RECORDS: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;
/// Batches sent but not yet durable, before the producer waits for the oldest.
const IN_FLIGHT: usize = 8;
/// Bytes of stdin read at once.
const STDIN_BUFFER: usize = 1 << 20;

async fn produce(
    broker: &Broker,
    topic: &str,
    generate: Option<(u64, usize)>,
    key_separator: Option<String>,
) -> Result<(), CliError> {
    // The topic must exist before anything is read.
    let partitions = broker.describe(topic).await?.config.partitions;
    let started = Instant::now();
    let mut producer = Producer::new(broker, topic, partitions);
    match generate {
        Some((count, size)) => {
            let pattern = ValuePattern::new(size);
            for i in 0..count {
                producer.add(Some(Bytes::from(i.to_string())), pattern.value(i)).await?;
            }
        }
        None => {
            let mut input = BufReader::with_capacity(STDIN_BUFFER, tokio::io::stdin());
            let mut line = Vec::new();
            loop {
                // Nothing buffered: whatever is batched goes now, before waiting on the
                // terminal (or a slow pipe).
                if input.buffer().is_empty() {
                    producer.send_all().await?;
                }
                line.clear();
                let n = input
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| CliError::Io(format!("cannot read stdin: {e}")))?;
                if n == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                let (key, value) = split_line(&line, key_separator.as_deref());
                producer.add(key, value).await?;
            }
        }
    }
    let (records, used) = producer.finish().await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {records} record{} to {used} partition{} of {topic} in {secs:.2}s ({} records/s)",
        plural(records),
        plural(used.into()),
        human(records as f64 / secs.max(1e-9))
    );
    Ok(())
}

/// A stdin line as key and value: split at the first `separator`, if any.
fn split_line(line: &[u8], separator: Option<&str>) -> (Option<Bytes>, Bytes) {
    if let Some(sep) = separator.map(str::as_bytes) {
        if let Some(at) = line.windows(sep.len()).position(|w| w == sep) {
            return (
                Some(Bytes::copy_from_slice(&line[..at])),
                Bytes::copy_from_slice(&line[at + sep.len()..]),
            );
        }
    }
    (None, Bytes::copy_from_slice(line))
}

/// Generated values: the record number, a space, then `abc…xyz0…9` repeated, `size` bytes.
struct ValuePattern {
    size: usize,
    fill: Vec<u8>,
}

impl ValuePattern {
    fn new(size: usize) -> Self {
        const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        ValuePattern { size, fill: PATTERN.iter().copied().cycle().take(size).collect() }
    }

    fn value(&self, i: u64) -> Bytes {
        let mut value = Vec::with_capacity(self.size);
        value.extend_from_slice(i.to_string().as_bytes());
        value.push(b' ');
        value.truncate(self.size);
        let have = value.len();
        value.extend_from_slice(&self.fill[..self.size - have]);
        Bytes::from(value)
    }
}

/// Batches records per partition and keeps a few batches in flight.
struct Producer<'a> {
    broker: &'a Broker,
    topic: &'a str,
    partitioner: Partitioner,
    batches: Vec<(Vec<NewRecord>, usize)>,
    in_flight: VecDeque<Pending>,
    records: u64,
    used: Vec<bool>,
}

impl<'a> Producer<'a> {
    fn new(broker: &'a Broker, topic: &'a str, partitions: u32) -> Self {
        Producer {
            broker,
            topic,
            partitioner: Partitioner::new(),
            batches: (0..partitions).map(|_| (Vec::new(), 0)).collect(),
            in_flight: VecDeque::new(),
            records: 0,
            used: vec![false; partitions as usize],
        }
    }

    async fn add(&mut self, key: Option<Bytes>, value: Bytes) -> Result<(), BrokerError> {
        let partition = self.partitioner.partition(key.as_deref(), self.batches.len() as u32);
        let (batch, bytes) = &mut self.batches[partition as usize];
        *bytes += key.as_ref().map_or(0, Bytes::len) + value.len() + 16;
        batch.push(NewRecord { key, value, timestamp: None });
        if batch.len() >= BATCH_RECORDS || *bytes >= BATCH_BYTES {
            self.send(partition).await?;
        }
        Ok(())
    }

    async fn send(&mut self, partition: u32) -> Result<(), BrokerError> {
        let (batch, bytes) = &mut self.batches[partition as usize];
        if batch.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(batch);
        *bytes = 0;
        while self.in_flight.len() >= IN_FLIGHT {
            if let Some(oldest) = self.in_flight.pop_front() {
                oldest.wait().await?;
            }
        }
        self.records += records.len() as u64;
        self.used[partition as usize] = true;
        let pending = self.broker.produce(self.topic, partition, records).await?;
        self.in_flight.push_back(pending);
        Ok(())
    }

    async fn send_all(&mut self) -> Result<(), BrokerError> {
        for partition in 0..self.batches.len() as u32 {
            self.send(partition).await?;
        }
        Ok(())
    }

    /// Sends what is left and waits until every record is durable; returns the records and
    /// the partitions they went to.
    async fn finish(mut self) -> Result<(u64, u32), BrokerError> {
        self.send_all().await?;
        while let Some(pending) = self.in_flight.pop_front() {
            pending.wait().await?;
        }
        Ok((self.records, self.used.iter().filter(|&&u| u).count() as u32))
    }
}

// ---- tail -------------------------------------------------------------------------------

/// Bytes of records one fetch asks for, and how long it waits at the end of a partition.
const FETCH_BYTES: usize = 1 << 20;
const FETCH_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
enum Start {
    Beginning,
    End,
    Offset(u64),
}

async fn tail(
    broker: &Broker,
    topic: &str,
    partition: Option<u32>,
    start: Start,
    count: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    let info = broker.describe(topic).await?;
    let partitions = info.config.partitions;
    let chosen: Vec<u32> = match partition {
        Some(p) if p >= partitions => {
            return Err(
                BrokerError::NoSuchPartition { topic: topic.to_string(), partition: p, partitions }.into()
            )
        }
        Some(p) => vec![p],
        None => (0..partitions).collect(),
    };
    let mut left = count.unwrap_or(u64::MAX);
    if left == 0 {
        return Ok(());
    }
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Io(format!("cannot listen for Ctrl-C: {e}")))?;
    // One reader per partition; the printer takes their batches as they come.
    let (batches, mut incoming) = mpsc::channel::<Result<(u32, Vec<Record>), BrokerError>>(2 * chosen.len());
    let mut readers = tokio::task::JoinSet::new();
    for p in chosen {
        let figures = info.partitions.iter().find(|f| f.partition == p);
        let mut next = match start {
            Start::Beginning => figures.map_or(0, |f| f.log_start),
            Start::End => figures.map_or(0, |f| f.high_watermark),
            Start::Offset(offset) => offset,
        };
        let (broker, topic, batches) = (broker.clone(), topic.to_string(), batches.clone());
        readers.spawn(async move {
            loop {
                match broker.fetch(&topic, p, next, FETCH_BYTES, FETCH_WAIT).await {
                    Ok(fetched) => {
                        if let Some(last) = fetched.records.last() {
                            next = last.offset + 1;
                            if batches.send(Ok((p, fetched.records))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = batches.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
    }
    drop(batches);
    loop {
        let (p, records) = tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            batch = incoming.recv() => match batch {
                Some(batch) => batch?,
                None => return Ok(()),
            },
        };
        let mut text = Vec::with_capacity(records.iter().map(|r| r.value.len() + 64).sum());
        for record in records.iter().take(left.min(usize::MAX as u64) as usize) {
            if json {
                let line = JsonRecord {
                    partition: p,
                    offset: record.offset,
                    key: record.key.as_deref().map(String::from_utf8_lossy),
                    value: String::from_utf8_lossy(&record.value),
                    timestamp: record.timestamp,
                };
                serde_json::to_writer(&mut text, &line).map_err(|e| CliError::Io(e.to_string()))?;
            } else {
                text.extend_from_slice(&record.value);
            }
            text.push(b'\n');
            left -= 1;
        }
        // A closed stdout ends the tail as well.
        write_stdout(&text)?;
        if left == 0 {
            return Ok(());
        }
    }
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    partition: u32,
    offset: u64,
    key: Option<Cow<'a, str>>,
    value: Cow<'a, str>,
    timestamp: i64,
}

// ---- describe ---------------------------------------------------------------------------

/// Each partition's lag behind the group's committed offset (None: nothing committed), and
/// the total of the known ones.
fn lags(info: &TopicInfo, offsets: &[Option<u64>]) -> (Vec<Option<u64>>, u64) {
    let lags: Vec<Option<u64>> = info
        .partitions
        .iter()
        .map(|p| {
            offsets
                .get(p.partition as usize)
                .copied()
                .flatten()
                .map(|committed| p.high_watermark.saturating_sub(committed))
        })
        .collect();
    let total = lags.iter().flatten().sum();
    (lags, total)
}

fn describe_json(info: &TopicInfo) -> Result<String, CliError> {
    let mut json = serde_json::to_value(info).map_err(|e| CliError::Io(e.to_string()))?;
    if let Some(groups) = json.get_mut("groups").and_then(|g| g.as_array_mut()) {
        for (group, info_group) in groups.iter_mut().zip(&info.groups) {
            let (lag, total) = lags(info, &info_group.offsets);
            group["lag"] = serde_json::json!(lag);
            group["total_lag"] = serde_json::json!(total);
        }
    }
    Ok(format!("{json}\n"))
}

fn describe_text(info: &TopicInfo) -> String {
    use std::fmt::Write as _;
    let c = &info.config;
    let fsync = match c.fsync {
        FsyncPolicy::Always => "always".to_string(),
        FsyncPolicy::Interval { ms } => format!("every {ms}ms"),
        FsyncPolicy::Never => "never".to_string(),
    };
    let retention = match (c.retention_bytes, c.retention_secs) {
        (None, None) => "none".to_string(),
        (bytes, secs) => {
            let mut parts = Vec::new();
            if let Some(b) = bytes {
                parts.push(format!("{b} bytes"));
            }
            if let Some(s) = secs {
                parts.push(humantime::format_duration(Duration::from_secs(s)).to_string());
            }
            parts.join(", ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "topic {}: {} partition{}, segments of {} bytes, retention {retention}, fsync {fsync}",
        info.name,
        c.partitions,
        plural(c.partitions.into()),
        c.segment_bytes
    );
    let _ = writeln!(
        out,
        "{:>9}  {:>12}  {:>14}  {:>12}  {:>14}  {:>8}",
        "partition", "log start", "high watermark", "durable", "bytes", "segments"
    );
    for p in &info.partitions {
        let _ = writeln!(
            out,
            "{:>9}  {:>12}  {:>14}  {:>12}  {:>14}  {:>8}",
            p.partition, p.log_start, p.high_watermark, p.durable, p.size_bytes, p.segments
        );
    }
    if info.groups.is_empty() {
        let _ = writeln!(out, "no consumer group has committed offsets");
    }
    for group in &info.groups {
        let (lags, total) = lags(info, &group.offsets);
        let _ = writeln!(out, "group {}: total lag {total}", group.group);
        let _ =
            writeln!(out, "{:>9}  {:>12}  {:>14}  {:>12}", "partition", "committed", "high watermark", "lag");
        let dash = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |x| x.to_string());
        for (p, lag) in info.partitions.iter().zip(lags) {
            let committed = group.offsets.get(p.partition as usize).copied().flatten();
            let _ = writeln!(
                out,
                "{:>9}  {:>12}  {:>14}  {:>12}",
                p.partition,
                dash(committed),
                p.high_watermark,
                dash(lag)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_broker::{GroupInfo, PartitionInfo};

    #[test]
    fn generated_values_are_printable_and_sized() {
        let pattern = ValuePattern::new(20);
        assert_eq!(&pattern.value(0)[..], b"0 abcdefghijklmnopqr");
        assert_eq!(&pattern.value(12345)[..], b"12345 abcdefghijklmn");
        assert_eq!(&ValuePattern::new(3).value(12345)[..], b"123");
        assert_eq!(&ValuePattern::new(0).value(7)[..], b"");
        let long = ValuePattern::new(1000).value(42);
        assert_eq!(long.len(), 1000);
        assert!(long.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
    }

    #[test]
    fn stdin_lines_split_at_the_first_separator() {
        assert_eq!(split_line(b"k=v=w", Some("=")), (Some(Bytes::from("k")), Bytes::from("v=w")));
        assert_eq!(split_line(b"k::v", Some("::")), (Some(Bytes::from("k")), Bytes::from("v")));
        assert_eq!(split_line(b"=v", Some("=")), (Some(Bytes::new()), Bytes::from("v")));
        assert_eq!(split_line(b"no separator", Some("=")), (None, Bytes::from("no separator")));
        assert_eq!(split_line(b"k=v", None), (None, Bytes::from("k=v")));
    }

    fn info() -> TopicInfo {
        let partition = |p, hw| PartitionInfo {
            partition: p,
            log_start: 0,
            high_watermark: hw,
            durable: hw,
            size_bytes: hw * 10,
            segments: 1,
        };
        TopicInfo {
            name: "t".into(),
            config: TopicConfig::new(3),
            partitions: vec![partition(0, 10), partition(1, 20), partition(2, 5)],
            groups: vec![GroupInfo { group: "g".into(), offsets: vec![Some(4), None, Some(5)] }],
        }
    }

    #[test]
    fn lag_is_the_distance_to_the_high_watermark() {
        let info = info();
        assert_eq!(lags(&info, &info.groups[0].offsets), (vec![Some(6), None, Some(0)], 6));
        let json: serde_json::Value = serde_json::from_str(&describe_json(&info).unwrap()).unwrap();
        assert_eq!(json["groups"][0]["lag"], serde_json::json!([6, null, 0]));
        assert_eq!(json["groups"][0]["total_lag"], 6);
        assert_eq!(json["partitions"][1]["high_watermark"], 20);
        let text = describe_text(&info);
        assert!(text.contains("group g: total lag 6"), "{text}");
    }
}
