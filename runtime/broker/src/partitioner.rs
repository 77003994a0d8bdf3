//! Which partition a record goes to, shared by everything that produces (`squall topic
//! produce`, the log sink), so that one key always lands in one partition.
//!
//! Contract: a keyed record goes to [`partition_for_key`]: a stable 64-bit hash of the key's
//! bytes (squall-api's [`StableHasher`], the same in every process, build and version; for a
//! UTF-8 key, the hash `Value::Str` of it has) modulo the partition count. Records without a
//! key go round-robin over the partitions ([`Partitioner`]).

use squall_api::StableHasher;

/// The partition of a record with key `key` in a topic of `partitions` partitions (> 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hasher = StableHasher::new();
    hasher.write_bytes(key);
    (hasher.finish() % u64::from(partitions.max(1))) as u32
}

/// Chooses partitions: by key when there is one, else round-robin.
#[derive(Debug, Default, Clone)]
pub struct Partitioner {
    next: u32,
}

impl Partitioner {
    pub fn new() -> Self {
        Partitioner::default()
    }

    /// The partition for a record with `key` in a topic of `partitions` partitions (> 0).
    pub fn partition(&mut self, key: Option<&[u8]>, partitions: u32) -> u32 {
        match key {
            Some(key) => partition_for_key(key, partitions),
            None => {
                let partition = self.next % partitions.max(1);
                self.next = self.next.wrapping_add(1);
                partition
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::Value;

    #[test]
    fn a_key_always_goes_to_the_same_partition() {
        // Pinned: a change here moves keys between partitions of existing topics.
        let pinned: Vec<u32> = (0..8).map(|i| partition_for_key(i.to_string().as_bytes(), 4)).collect();
        assert_eq!(pinned, PINNED);
        for i in 0..100 {
            let key = format!("key-{i}");
            let p = partition_for_key(key.as_bytes(), 7);
            assert!(p < 7);
            assert_eq!(p, partition_for_key(key.as_bytes(), 7));
            // The hash a string value has, as fields grouping uses it.
            assert_eq!(u64::from(p), Value::Str(key.as_str().into()).stable_hash() % 7);
        }
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }

    const PINNED: [u32; 8] = [0, 3, 3, 1, 2, 1, 0, 1];

    #[test]
    fn keys_spread_over_the_partitions() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_for_key(i.to_string().as_bytes(), 4) as usize] += 1;
        }
        for count in counts {
            assert!((800..1200).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn records_without_a_key_go_round_robin() {
        let mut p = Partitioner::new();
        let got: Vec<u32> = (0..7).map(|_| p.partition(None, 3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(p.partition(Some(b"7"), 3), partition_for_key(b"7", 3));
    }
}
