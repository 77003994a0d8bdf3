//! The codec of the hot frames: round trips, rmp-serde's bytes, any encoding a MessagePack
//! writer may choose, and bad bodies.

use super::*;
use crate::transport::codec;

/// An envelope's fields, to compare.
type Parts = (u32, TaskId, Vec<Value>, Vec<(u64, u64)>);

fn parts(batch: &[Envelope]) -> Vec<Parts> {
    batch.iter().map(|e| (e.stream, e.source_task, e.values.to_vec(), e.anchors.to_vec())).collect()
}

/// Every kind of value, at the edges of its encodings.
fn every_value() -> Vec<Value> {
    let mut v = vec![Value::Null, Value::Bool(true), Value::Bool(false)];
    let ints = [0, 1, 127, 128, 255, 256, 65535, 65536, u32::MAX as i64, u32::MAX as i64 + 1, i64::MAX];
    v.extend(ints.iter().map(|&i| Value::Int(i)));
    let negative = [-1, -32, -33, -128, -129, -32768, -32769, i32::MIN as i64, i32::MIN as i64 - 1, i64::MIN];
    v.extend(negative.iter().map(|&i| Value::Int(i)));
    let floats = [0.0, -0.0, 1.5, -2.25e300, f64::MIN_POSITIVE, f64::MAX, f64::INFINITY, f64::NEG_INFINITY];
    v.extend(floats.iter().map(|&f| Value::Float(f)));
    v.extend([0, 1, 24, 25, 31, 32, 255, 256, 65535, 65536].iter().map(|&n| Value::from("w".repeat(n))));
    v.push(Value::from("naïve — ünïcödé ✓"));
    v.extend([0, 1, 255, 256, 65536].iter().map(|&n| Value::Bytes((0..n).map(|i| i as u8).collect())));
    v.push(Value::List(Vec::new()));
    v.push(Value::Map(BTreeMap::new()));
    v.push(Value::List((0..20).map(Value::from).collect()));
    v.push(Value::List((0..70_000).map(|i| Value::from(i % 3)).collect()));
    v.push(Value::Map((0..20).map(|i| (i.to_string(), Value::from(i))).collect()));
    let inner = BTreeMap::from([("x".to_string(), Value::Float(-0.5)), ("".to_string(), Value::Null)]);
    let map = BTreeMap::from([
        ("k".to_string(), Value::List(vec![Value::Null, Value::from("v"), Value::Map(inner)])),
        ("é".repeat(20), Value::Bytes(vec![0xff; 3])),
        ("n".to_string(), Value::List(vec![Value::List(vec![Value::List(vec![Value::from(-7)])])])),
    ]);
    v.push(Value::List(vec![
        Value::from(1),
        Value::Map(map.clone()),
        Value::List(vec![Value::Map(map.clone())]),
    ]));
    v.push(Value::Map(map));
    v
}

fn every_envelope() -> Vec<Envelope> {
    let values = every_value();
    let anchors = [vec![], vec![(0, u64::MAX)], vec![(1, 2), (u32::MAX as u64 + 1, 127), (128, 65536)]];
    let mut batch: Vec<Envelope> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Envelope {
            stream: [0, 1, 200, u32::MAX][i % 4],
            source_task: i as TaskId * 1000,
            values: smallvec![v.clone()],
            anchors: anchors[i % 3].iter().copied().collect(),
        })
        .collect();
    batch.push(Envelope { stream: 3, source_task: 4, values: Values::new(), anchors: Anchors::new() });
    let three = smallvec![Value::from("the"), Value::Int(1), Value::Null];
    batch.push(Envelope { stream: 3, source_task: 4, values: three, anchors: Anchors::new() });
    batch.push(Envelope {
        stream: 5,
        source_task: 6,
        values: values.into_iter().collect(),
        anchors: Anchors::new(),
    });
    batch
}

fn body(frame: &Frame) -> Vec<u8> {
    let mut buf = Vec::new();
    codec::put_body(&mut buf, frame).unwrap();
    buf
}

#[test]
fn the_codec_round_trips_every_value_and_writes_what_rmp_serde_writes() {
    let batch = every_envelope();
    for more in [false, true] {
        let frame = Frame::Bolts { task: 70_000, more, batch: Cow::Borrowed(&batch) };
        let bytes = body(&frame);
        assert!(bytes == rmp_serde::to_vec(&frame).unwrap(), "the wire format is rmp-serde's");
        for decoded in [codec::decode_body(&bytes).unwrap(), rmp_serde::from_slice(&bytes).unwrap()] {
            let Frame::Bolts { task: 70_000, more: m, batch: back } = decoded else { panic!("not a batch") };
            assert_eq!(m, more);
            assert_eq!(parts(&back), parts(&batch));
        }
    }
    // NaN is not equal to itself, so it is checked alone.
    let nan = vec![Envelope { values: smallvec![Value::Float(f64::NAN)], ..batch[0].clone() }];
    let bytes = body(&Frame::Bolts { task: 1, more: false, batch: Cow::Borrowed(&nan) });
    let Ok(Frame::Bolts { batch: back, .. }) = codec::decode_body(&bytes) else { panic!("not a batch") };
    assert!(matches!(back[0].values[0], Value::Float(f) if f.is_nan()));
    // The empty batch, and short strings come back inline.
    let bytes = body(&Frame::Bolts { task: 0, more: false, batch: Cow::Owned(Vec::new()) });
    assert!(matches!(codec::decode_body(&bytes), Ok(Frame::Bolts { batch, .. }) if batch.is_empty()));
    let short = vec![Envelope { values: smallvec![Value::from("word")], ..batch[0].clone() }];
    let bytes = body(&Frame::Bolts { task: 1, more: false, batch: Cow::Borrowed(&short) });
    let Ok(Frame::Bolts { batch: back, .. }) = codec::decode_body(&bytes) else { panic!("not a batch") };
    assert!(matches!(&back[0].values[0], Value::Str(s) if !s.is_heap_allocated()));
}

#[test]
fn the_codec_round_trips_acker_messages_outcomes_credits_and_hellos() {
    let msgs = vec![
        AckerMsg::Init { root: 0, val: u64::MAX },
        AckerMsg::Ack { root: 1 << 48, val: 127, lane: 4 },
        AckerMsg::Fail { root: 128, by: 3 },
        AckerMsg::Reset { root: u64::MAX },
    ];
    let outcomes = vec![Outcome::acked(5), Outcome::timed_out(u64::MAX, 5)];
    let credits = vec![(0, 1), (3, 16), (u32::MAX, u32::MAX)];
    let frames = [
        Frame::Ackers { task: 7, more: false, batch: Cow::Borrowed(&msgs) },
        Frame::Ackers { task: 7, more: true, batch: Cow::Owned(Vec::new()) },
        Frame::Outcomes { task: 1, more: true, batch: Cow::Borrowed(&outcomes) },
        Frame::Credits(Cow::Borrowed(&credits)),
        Frame::Credits(Cow::Owned(Vec::new())),
        Frame::Hello(Hello { protocol: PROTOCOL, topology: "t".into(), version: 9, worker: 1, credits: 16 }),
        Frame::Refused("no".into()),
    ];
    for frame in &frames {
        let bytes = body(frame);
        assert!(bytes == rmp_serde::to_vec(frame).unwrap(), "the wire format is rmp-serde's: {frame:?}");
        let back = codec::decode_body(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{frame:?}"));
        let back: Frame = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{frame:?}"));
    }
}

/// `{"B": [3, false, [[0, 0, [<value>], []]]]}`
fn one_value_body(value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x81, 0xa1, b'B', 0x93, 0x03, 0xc2, 0x91, 0x94, 0x00, 0x00, 0x91];
    b.extend_from_slice(value);
    b.push(0x90);
    b
}

fn one_value(value: &[u8]) -> Result<Value, String> {
    match codec::decode_body(&one_value_body(value)).map_err(|e| e.to_string())? {
        Frame::Bolts { batch, .. } => Ok(batch[0].values[0].clone()),
        other => panic!("not a batch: {other:?}"),
    }
}

#[test]
fn the_codec_reads_any_encoding_a_messagepack_writer_may_choose() {
    let mut v = Vec::new();
    rmp::encode::write_f32(&mut v, 1.5).unwrap();
    assert_eq!(one_value(&v), Ok(Value::Float(1.5)));
    for (bytes, n) in [
        (&[0xcf, 0, 0, 0, 0, 0, 0, 0, 5][..], 5),
        (&[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], -1),
        (&[0xd1, 0x00, 0x07][..], 7),
        (&[0xcc, 0x01][..], 1),
    ] {
        assert_eq!(one_value(bytes), Ok(Value::Int(n)));
    }
    assert_eq!(one_value(&[0xd9, 2, b'a', b'b']), Ok(Value::from("ab")));
    assert_eq!(one_value(&[0xdc, 0, 1, 0xc0]), Ok(Value::List(vec![Value::Null])));
    assert_eq!(one_value(&[0xc4, 1, 9]), Ok(Value::Bytes(vec![9])));
    // Wide integers in the envelope's own fields too.
    let null = one_value_body(&[0xc0]);
    let b = [&null[..8], &[0xce, 0, 0, 0, 4], &null[9..]].concat();
    let Ok(Frame::Bolts { batch, .. }) = codec::decode_body(&b) else { panic!("not a batch") };
    assert_eq!(batch[0].stream, 4);
}

#[test]
fn the_codec_rejects_truncated_and_garbage_bodies_without_panicking() {
    let batch: Vec<Envelope> =
        every_envelope().into_iter().filter(|e| e.values.len() == 1).take(60).collect();
    let msgs = vec![AckerMsg::Init { root: 1, val: 2 }, AckerMsg::Fail { root: 3, by: 3 }];
    let frames = [
        Frame::Bolts { task: 3, more: false, batch: Cow::Borrowed(&batch) },
        Frame::Ackers { task: 7, more: false, batch: Cow::Borrowed(&msgs) },
        Frame::Outcomes { task: 1, more: false, batch: Cow::Owned(vec![Outcome::acked(1)]) },
        Frame::Credits(Cow::Owned(vec![(3, 1), (5, 2)])),
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for frame in &frames {
        let good = body(frame);
        // Every strict prefix is an error, and so is a byte too many.
        for end in 0..good.len() {
            assert!(codec::decode_body(&good[..end]).is_err(), "{frame:?} cut at {end}");
        }
        let mut long = good.clone();
        long.push(0xc0);
        assert!(codec::decode_body(&long).is_err());
        // Corrupted bytes: an error or some frame, never a panic.
        for _ in 0..2000 {
            let mut bad = good.clone();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(3..bad.len());
                bad[at] = rng.u8(..);
            }
            let _ = codec::decode_body(&bad);
        }
    }
    for _ in 0..5000 {
        let mut bad = vec![0x81, 0xa1, *rng.choice(b"BAOC").unwrap()];
        bad.extend((0..rng.usize(0..48)).map(|_| rng.u8(..)));
        let _ = codec::decode_body(&bad);
    }

    // Values that do not fit one, and lengths past the end of the body.
    for bad in [
        &[0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0][..], // 2^63
        &[0xa2, 0xff, 0xfe],                    // not UTF-8
        &[0x81, 0x01, 0xc0],                    // an integer key
        &[0xd4, 0x01, 0x00],                    // an extension
        &[0xc1],                                // reserved
        &[0xdd, 0xff, 0xff, 0xff, 0xff],        // a list of 2^32 - 1 items
        &[0xdf, 0xff, 0xff, 0xff, 0xff],        // a map of 2^32 - 1 entries
        &[0xdb, 0xff, 0xff, 0xff, 0xff],        // a string of 4 GiB
        &[0xc6, 0xff, 0xff, 0xff, 0xff],        // bytes of 4 GiB
    ] {
        assert!(one_value(bad).is_err(), "{bad:x?}");
    }
    let mut huge = vec![0x81, 0xa1, b'B', 0x93, 0x03, 0xc2, 0xdd, 0xff, 0xff, 0xff, 0xff];
    huge.extend([0x94, 0, 0, 0x90, 0x90]);
    assert!(codec::decode_body(&huge).is_err());

    // Nesting: up to the limit it travels; past it, neither side takes it (nor overflows).
    let nested = |depth: usize| (0..depth).fold(Value::Null, |v, _| Value::List(vec![v]));
    assert_eq!(one_value(&body_of_value(&nested(codec::MAX_DEPTH))), Ok(nested(codec::MAX_DEPTH)));
    let deep = vec![Envelope { values: smallvec![nested(codec::MAX_DEPTH + 1)], ..batch[0].clone() }];
    assert!(codec::put_body(
        &mut Vec::new(),
        &Frame::Bolts { task: 3, more: false, batch: Cow::Borrowed(&deep) }
    )
    .is_err());
    assert!(one_value(&[0x91; 100_000]).is_err());
    assert!(one_value(&[0x81, 0xa0].repeat(50_000)).is_err());
}

/// A value's bytes, as the codec writes it.
fn body_of_value(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    codec::put_value(&mut buf, v, 0).unwrap();
    buf
}

/// Fuzzing the decoder of what peers send: random bytes, and valid bodies of every frame kind
/// with bytes flipped, cut or inserted. No input panics it; whatever decodes stays within the
/// decode budget. A bounded number of cases, so CI stays fast.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn valid_bodies() -> Vec<Vec<u8>> {
        let envelopes = every_envelope();
        let msgs = vec![AckerMsg::Init { root: 1, val: 2 }, AckerMsg::Reset { root: u64::MAX }];
        let frames = [
            Frame::Bolts { task: 3, more: false, batch: Cow::Owned(envelopes[..8].to_vec()) },
            Frame::Bolts { task: 9, more: true, batch: Cow::Owned(envelopes[20..].to_vec()) },
            Frame::Ackers { task: 7, more: false, batch: Cow::Owned(msgs) },
            Frame::Outcomes { task: 1, more: false, batch: Cow::Owned(vec![Outcome::acked(5)]) },
            Frame::Credits(Cow::Owned(vec![(3, 1), (u32::MAX, u32::MAX)])),
            Frame::Refused("no".into()),
        ];
        frames.iter().map(body).collect()
    }

    /// A change to a body: flip a byte, cut it short, or insert bytes.
    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Truncate(usize),
        Insert(usize, Vec<u8>),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, b)| Mutation::Insert(at, b)),
        ]
    }

    fn apply(body: &mut Vec<u8>, m: &Mutation) {
        if body.is_empty() {
            return;
        }
        match m {
            Mutation::Set(at, b) => {
                let i = at % body.len();
                body[i] = *b;
            }
            Mutation::Truncate(at) => body.truncate(at % body.len()),
            Mutation::Insert(at, bytes) => {
                let i = at % body.len();
                body.splice(i..i, bytes.iter().copied());
            }
        }
    }

    fn decodes_within_budget(body: &[u8]) {
        if let Ok(frame) = codec::decode_body(body) {
            assert!(codec::overhead(&frame) <= codec::MAX_OVERHEAD);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            decodes_within_budget(&bytes);
            // With the head of a batch frame, the hand-written decoder reads the rest.
            for head in [&[0x81, 0xa1, b'B'][..], &[0x81, 0xa1, b'A'], &[0x81, 0xa1, b'O'], &[0x81, 0xa1, b'C']] {
                let mut body = head.to_vec();
                body.extend_from_slice(&bytes);
                decodes_within_budget(&body);
            }
        }

        #[test]
        fn mutated_frames_never_panic_the_decoder(
            which in 0usize..6,
            mutations in proptest::collection::vec(mutation(), 1..6),
        ) {
            let mut body = valid_bodies().swap_remove(which);
            for m in &mutations {
                apply(&mut body, m);
            }
            decodes_within_budget(&body);
        }
    }
}
