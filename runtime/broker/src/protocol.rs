//! The messages between a `squall broker` server and its clients, each in one
//! [`frame`](squall_engine::frame).
//!
//! Contract: a client sends [`Request`]s, each with an id of its choosing (unique among its
//! requests in flight on the connection; 0 is reserved); the server answers each with one
//! [`Response`] carrying the same id. Responses may come out of order (an append is answered
//! once durable, a fetch may wait for records), so a client matches them by id. Requests take
//! effect in the order they are sent: appends to a partition keep their order. Both messages
//! are arrays that start with the id, so the id of one that does not decode (from a newer
//! version, say) can still be read ([`request_id`], [`response_id`]). A request the server
//! cannot decode is answered with an error under its id if that much could be read, else under
//! id 0; a response the client cannot decode fails the request of its id. Keys and values
//! travel as MessagePack bin.

use serde::{Deserialize, Serialize};

use super::error::WireError;
use super::{Fetched, NewRecord, Record, TopicConfig, TopicInfo};

/// The id of a response to a request whose id could not be read.
pub const UNKNOWN_ID: u64 = 0;

/// The largest frame body on a broker connection: the largest record
/// ([`record::MAX_FRAME_LEN`](super::record::MAX_FRAME_LEN)) and its envelope (64 MiB + 64 KiB),
/// so that any record can be fetched over TCP.
pub const MAX_FRAME: usize = super::record::MAX_FRAME_LEN + super::record::WIRE_ENVELOPE_ALLOWANCE;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    CreateTopic {
        name: String,
        config: TopicConfig,
    },
    Topics,
    Describe {
        topic: String,
    },
    Produce {
        topic: String,
        partition: u32,
        records: Vec<NewRecord>,
    },
    /// Records from `offset` on, about `max_bytes` of them; at the end of the partition, waits
    /// up to `wait_ms` for some.
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        max_bytes: u64,
        wait_ms: u64,
    },
    Commit {
        group: String,
        topic: String,
        partition: u32,
        offset: u64,
    },
    Committed {
        group: String,
        topic: String,
    },
}

impl Op {
    /// The operation's name, for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateTopic { .. } => "create-topic",
            Op::Topics => "topics",
            Op::Describe { .. } => "describe",
            Op::Produce { .. } => "produce",
            Op::Fetch { .. } => "fetch",
            Op::Commit { .. } => "commit",
            Op::Committed { .. } => "committed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub result: Result<Reply, WireError>,
}

/// A successful answer; which one follows from the request's [`Op`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// CreateTopic and Commit.
    Done,
    Topics(Vec<String>),
    Topic(TopicInfo),
    /// Produce: the first record's offset; every record is durable.
    Produced {
        base_offset: u64,
    },
    Fetched(FetchedRecords),
    /// Committed: one per partition.
    Offsets(Vec<Option<u64>>),
}

/// [`Fetched`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedRecords {
    pub records: Vec<Record>,
    pub high_watermark: u64,
    pub log_start: u64,
}

impl From<Fetched> for FetchedRecords {
    fn from(f: Fetched) -> Self {
        FetchedRecords { records: f.records, high_watermark: f.high_watermark, log_start: f.log_start }
    }
}

impl From<FetchedRecords> for Fetched {
    fn from(f: FetchedRecords) -> Self {
        Fetched { records: f.records, high_watermark: f.high_watermark, log_start: f.log_start }
    }
}

/// Just the id of a message whose rest could not be decoded (a [`Request`] is the array
/// `[id, op]`, a [`Response`] the array `[id, result]`).
#[derive(Debug, Deserialize)]
pub struct MessageId(pub u64, #[allow(dead_code)] serde::de::IgnoredAny);

fn message_id(body: &[u8]) -> Option<u64> {
    rmp_serde::from_slice::<MessageId>(body).ok().map(|m| m.0)
}

/// The id of a request body that does not decode as a [`Request`], if it has one.
pub fn request_id(body: &[u8]) -> Option<u64> {
    message_id(body)
}

/// The id of a response body that does not decode as a [`Response`], if it has one.
pub fn response_id(body: &[u8]) -> Option<u64> {
    message_id(body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::{FsyncPolicy, GroupInfo, PartitionInfo};
    use bytes::Bytes;
    use squall_engine::frame;

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let frame = frame::encode(value, MAX_FRAME).unwrap();
        frame::decode(&frame[4..]).unwrap()
    }

    fn every_op() -> Vec<Op> {
        let mut config = TopicConfig::new(3);
        config.retention_bytes = Some(1 << 30);
        config.retention_secs = Some(3600);
        vec![
            Op::CreateTopic { name: "orders".into(), config: config.clone() },
            Op::CreateTopic {
                name: "never".into(),
                config: TopicConfig { fsync: FsyncPolicy::Never, ..config.clone() },
            },
            Op::CreateTopic {
                name: "always".into(),
                config: TopicConfig { fsync: FsyncPolicy::Always, ..config },
            },
            Op::Topics,
            Op::Describe { topic: "orders".into() },
            Op::Produce {
                topic: "orders".into(),
                partition: 2,
                records: vec![
                    NewRecord {
                        key: Some(Bytes::from_static(b"k")),
                        value: Bytes::from_static(b"v"),
                        timestamp: None,
                    },
                    NewRecord { key: None, value: Bytes::from(vec![0, 255, 7]), timestamp: Some(-5) },
                ],
            },
            Op::Fetch {
                topic: "orders".into(),
                partition: 0,
                offset: u64::MAX,
                max_bytes: 1 << 20,
                wait_ms: 100,
            },
            Op::Commit { group: "g".into(), topic: "orders".into(), partition: 1, offset: 42 },
            Op::Committed { group: "g".into(), topic: "orders".into() },
        ]
    }

    /// Fuzzing the server's decoder of what clients send: random bytes, and every valid
    /// request with bytes flipped, cut or inserted. No input panics it, and one it cannot
    /// read is still answered (under its id, or id 0). A bounded number of cases.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn decode_like_the_server(body: &[u8]) {
            if frame::decode::<Request>(body).is_err() {
                let _ = request_id(body);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic_the_request_decoder(
                bytes in proptest::collection::vec(any::<u8>(), 0..512),
            ) {
                decode_like_the_server(&bytes);
            }

            #[test]
            fn mutated_requests_never_panic_the_request_decoder(
                which in any::<prop::sample::Index>(),
                edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
            ) {
                let ops = every_op();
                let request = Request { id: 9, op: ops[which.index(ops.len())].clone() };
                let mut body = frame::encode(&request, MAX_FRAME).unwrap()[4..].to_vec();
                for (at, byte, how) in edits {
                    if body.is_empty() {
                        break;
                    }
                    let i = at % body.len();
                    match how {
                        0 => body[i] = byte,
                        1 => body.truncate(i),
                        _ => body.insert(i, byte),
                    }
                }
                decode_like_the_server(&body);
            }
        }
    }

    #[test]
    fn every_request_round_trips() {
        for (i, op) in every_op().into_iter().enumerate() {
            let request = Request { id: i as u64 + 1, op };
            assert_eq!(round_trip(&request), request);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let info = TopicInfo {
            name: "orders".into(),
            config: TopicConfig::new(2),
            partitions: vec![PartitionInfo {
                partition: 0,
                log_start: 0,
                high_watermark: 10,
                durable: 9,
                size_bytes: 1234,
                segments: 1,
            }],
            groups: vec![GroupInfo { group: "g".into(), offsets: vec![Some(3), None] }],
        };
        let replies = vec![
            Ok(Reply::Done),
            Ok(Reply::Topics(vec!["a".into(), "b".into()])),
            Ok(Reply::Topic(info)),
            Ok(Reply::Produced { base_offset: 77 }),
            Ok(Reply::Fetched(FetchedRecords {
                records: vec![Record {
                    offset: 5,
                    timestamp: 1_700_000_000_000,
                    key: None,
                    value: Bytes::from_static(b"hello"),
                }],
                high_watermark: 6,
                log_start: 0,
            })),
            Ok(Reply::Offsets(vec![None, Some(1)])),
            Err(WireError { kind: ErrorKind::UnknownTopic, message: "unknown topic `x`".into() }),
            Err(WireError { kind: ErrorKind::Other, message: "disk full".into() }),
        ];
        for (i, result) in replies.into_iter().enumerate() {
            let response = Response { id: i as u64, result };
            assert_eq!(round_trip(&response), response);
        }
    }

    #[test]
    fn a_record_in_a_response_is_at_most_one_byte_longer_than_in_the_log() {
        use crate::record::frame_len;
        let empty = |at: u64| Response {
            id: u64::MAX,
            result: Ok(Reply::Fetched(FetchedRecords {
                records: Vec::new(),
                high_watermark: at,
                log_start: at,
            })),
        };
        let envelope = |at| frame::encode(&empty(at), MAX_FRAME).unwrap().len() - 4;
        assert!(envelope(u64::MAX) < 100, "{}", envelope(u64::MAX));
        // Bin headers grow at 256 and 64 Ki bytes; integers at 128, 256, 64 Ki, 4 Gi.
        let sizes = [0, 1, 255, 256, 65_535, 65_536, 70_000];
        for key in std::iter::once(None).chain(sizes.map(Some)) {
            for value in sizes {
                for (offset, timestamp) in [(0, 0), (u64::MAX, i64::MIN), (1 << 40, 1_700_000_000_000)] {
                    let record = Record {
                        offset,
                        timestamp,
                        key: key.map(|n| Bytes::from(vec![1; n])),
                        value: Bytes::from(vec![2; value]),
                    };
                    let on_disk = frame_len(record.key.as_deref(), &record.value);
                    let mut response = empty(offset);
                    let Ok(Reply::Fetched(f)) = &mut response.result else { unreachable!() };
                    f.records = vec![record.clone(), record];
                    let wire = frame::encode(&response, MAX_FRAME).unwrap().len() - 4 - envelope(offset);
                    assert!(
                        wire <= 2 * (on_disk + 1),
                        "key {key:?}, value {value}: {wire} > 2 × ({on_disk} + 1)"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_and_values_travel_as_bin() {
        let request = Request {
            id: 1,
            op: Op::Produce {
                topic: "t".into(),
                partition: 0,
                records: vec![NewRecord {
                    key: Some(Bytes::from_static(b"KEY")),
                    value: Bytes::from_static(b"VALUE"),
                    timestamp: None,
                }],
            },
        };
        let body = &frame::encode(&request, MAX_FRAME).unwrap()[4..];
        // bin 8: 0xc4, then the length, then the bytes.
        let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"\xc4\x03KEY"), "{body:x?}");
        assert!(find(b"\xc4\x05VALUE"), "{body:x?}");
    }

    #[test]
    fn the_id_of_an_undecodable_request_is_found_when_present() {
        // [9, "NoSuchOp"]: an array of an id and an unknown operation.
        let mut body = vec![0x92, 0x09, 0xa8];
        body.extend_from_slice(b"NoSuchOp");
        assert!(frame::decode::<Request>(&body).is_err());
        assert_eq!(request_id(&body), Some(9));
        // Not even an array.
        assert_eq!(request_id(&[0xc1]), None);
        assert_eq!(request_id(b""), None);
        // A real request.
        let body = &frame::encode(&Request { id: 123, op: Op::Topics }, MAX_FRAME).unwrap()[4..];
        assert_eq!(request_id(body), Some(123));
    }

    #[test]
    fn the_id_of_an_undecodable_response_is_found_when_present() {
        // An error of a kind this version does not know (a newer server's).
        let error = WireError { kind: ErrorKind::Other, message: "from the future".into() };
        let body = newer_error_kind(
            &frame::encode(&Response { id: 77, result: Err(error) }, MAX_FRAME).unwrap()[4..],
        );
        let err = frame::decode::<Response>(&body).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        assert_eq!(response_id(&body), Some(77));
        // Not even an array.
        assert_eq!(response_id(&[0xc1]), None);
        assert_eq!(response_id(b""), None);
        // A real response.
        let body = &frame::encode(&Response { id: 5, result: Ok(Reply::Done) }, MAX_FRAME).unwrap()[4..];
        assert_eq!(response_id(body), Some(5));
    }

    /// `body` (a response carrying an [`ErrorKind::Other`]) with the kind renamed to one this
    /// version does not know.
    pub(crate) fn newer_error_kind(body: &[u8]) -> Vec<u8> {
        let at = body.windows(5).position(|w| w == b"other").expect("an `other` error kind");
        let mut body = body.to_vec();
        body[at..at + 5].copy_from_slice(b"newer");
        body
    }
}
