//! Which partition a record goes to, the same for every producer (`squall topic produce`,
//! `log-sink`): a keyed record goes to the stable hash of its key modulo the partition
//! count, so one key always lands in one partition; unkeyed records are spread round-robin.

use squall_api::{bucket, StableHasher};

/// The partition of a record with this key (the same in every process and on every run).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let mut hasher = StableHasher::new();
    hasher.write_bytes(key);
    bucket(hasher.finish(), partitions as usize) as u32
}

/// Spreads unkeyed records over the partitions in turn.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin(u32);

impl RoundRobin {
    pub fn next(&mut self, partitions: u32) -> u32 {
        self.0 = self.0.wrapping_add(1);
        self.0 % partitions.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_partition_and_keys_spread() {
        let mut seen = [0u32; 3];
        for i in 0..3000 {
            let key = i.to_string();
            let p = partition_for_key(key.as_bytes(), 3);
            assert_eq!(p, partition_for_key(key.as_bytes(), 3));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
