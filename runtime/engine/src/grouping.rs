//! Groupings: which of a subscriber's tasks receive each tuple.
//!
//! Contract: one [`Router`] exists per emitting task and subscription. For each tuple it
//! pushes the receiving task ids onto a caller-owned vector and allocates nothing:
//! - shuffle / none: round-robin from a random start, so tasks get equal shares;
//! - fields: `bucket(stable_hash(key fields), tasks)`, the same task for equal keys in every process;
//! - partial_key: two candidate tasks from two hashes of the key, the one this emitter has sent
//!   fewer tuples to wins (key splitting for skewed keys);
//! - all: every task; global: the lowest task id; direct: the task the emitter named, if it
//!   is one of the subscriber's;
//! - local_or_shuffle: shuffle over the subscriber's tasks in the emitter's worker, or over all
//!   of them if none is local;
//! - custom: whatever the user's [`CustomGrouping`] chooses among the subscriber's tasks.

use squall_api::{bucket, BoxError, CustomGrouping, Registry, StableHasher, TaskId, Value};

use crate::plan::Subscription;
use crate::topology::GroupingDef;

pub enum Router {
    Shuffle { tasks: Vec<TaskId>, next: usize },
    Fields { tasks: Vec<TaskId>, key: Vec<usize> },
    PartialKey { tasks: Vec<TaskId>, key: Vec<usize>, sent: Vec<u64> },
    All { tasks: Vec<TaskId> },
    Global { task: TaskId },
    Direct { tasks: Vec<TaskId> },
    Custom { grouping: Box<dyn CustomGrouping>, tasks: Vec<TaskId>, scratch: Vec<TaskId> },
}

impl Router {
    /// The router for `sub` as seen from an emitter in worker `worker`.
    pub fn new(
        sub: &Subscription,
        worker: usize,
        task_worker: &[usize],
        registry: &Registry,
    ) -> Result<Router, BoxError> {
        let tasks = sub.tasks.clone();
        let shuffle = |tasks: Vec<TaskId>| {
            let next = fastrand::usize(..tasks.len().max(1));
            Router::Shuffle { tasks, next }
        };
        Ok(match &sub.grouping {
            GroupingDef::Shuffle | GroupingDef::None => shuffle(tasks),
            GroupingDef::LocalOrShuffle => {
                let local: Vec<TaskId> =
                    tasks.iter().copied().filter(|&t| task_worker[t as usize] == worker).collect();
                shuffle(if local.is_empty() { tasks } else { local })
            }
            GroupingDef::Fields(_) => Router::Fields { tasks, key: sub.key_fields.clone() },
            GroupingDef::PartialKey(_) => {
                let sent = vec![0; tasks.len()];
                Router::PartialKey { tasks, key: sub.key_fields.clone(), sent }
            }
            GroupingDef::All => Router::All { tasks },
            GroupingDef::Global => Router::Global { task: tasks.iter().copied().min().unwrap_or(0) },
            GroupingDef::Direct => Router::Direct { tasks },
            GroupingDef::Custom { kind, config } => {
                let mut grouping = registry.build_grouping(kind, config)?;
                grouping.prepare(&tasks);
                Router::Custom { grouping, tasks, scratch: Vec::new() }
            }
        })
    }

    /// Pushes the receiving tasks of a tuple with `values` onto `out`; `direct` is the task an
    /// emit_direct named.
    #[inline]
    pub fn route(&mut self, values: &[Value], direct: Option<TaskId>, out: &mut Vec<TaskId>) {
        match self {
            Router::Shuffle { tasks, next } => {
                if tasks.is_empty() {
                    return;
                }
                out.push(tasks[*next]);
                *next += 1;
                if *next == tasks.len() {
                    *next = 0;
                }
            }
            Router::Fields { tasks, key } => {
                let h = key_hash(values, key);
                out.push(tasks[bucket(h, tasks.len())]);
            }
            Router::PartialKey { tasks, key, sent } => {
                let h1 = key_hash(values, key);
                let mut second = StableHasher::new();
                second.write_u64(h1 ^ 0x5851_F42D_4C95_7F2D);
                let h2 = second.finish();
                let (a, b) = (bucket(h1, tasks.len()), bucket(h2, tasks.len()));
                let pick = if sent[b] < sent[a] { b } else { a };
                sent[pick] += 1;
                out.push(tasks[pick]);
            }
            Router::All { tasks } => out.extend_from_slice(tasks),
            Router::Global { task } => out.push(*task),
            Router::Direct { tasks } => {
                if let Some(t) = direct.filter(|t| tasks.contains(t)) {
                    out.push(t);
                }
            }
            Router::Custom { grouping, tasks, scratch } => {
                scratch.clear();
                grouping.choose_tasks(values, scratch);
                if scratch.iter().all(|t| tasks.contains(t)) {
                    out.extend_from_slice(scratch);
                } else {
                    tracing::warn!(
                        "custom grouping chose tasks {scratch:?}, not all among its targets {tasks:?}: tuple not sent"
                    );
                }
            }
        }
    }
}

#[inline]
fn key_hash(values: &[Value], key: &[usize]) -> u64 {
    match key {
        [one] => values.get(*one).map_or(0, Value::stable_hash),
        _ => {
            let mut h = StableHasher::new();
            for &i in key {
                if let Some(v) = values.get(i) {
                    v.hash_into(&mut h);
                }
            }
            h.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_api::values;
    use std::collections::{HashMap, HashSet};

    fn sub(grouping: GroupingDef, key_fields: Vec<usize>, tasks: Vec<TaskId>) -> Subscription {
        Subscription { component: 1, grouping, key_fields, tasks }
    }

    fn router(grouping: GroupingDef, key: Vec<usize>, tasks: Vec<TaskId>) -> Router {
        Router::new(&sub(grouping, key, tasks), 0, &[0; 16], &Registry::new()).unwrap()
    }

    fn route_one(r: &mut Router, values: &[Value]) -> Vec<TaskId> {
        let mut out = Vec::new();
        r.route(values, None, &mut out);
        out
    }

    #[test]
    fn shuffle_spreads_evenly_over_tasks() {
        let mut r = router(GroupingDef::Shuffle, vec![], vec![3, 4, 5]);
        let mut counts = HashMap::new();
        for _ in 0..300 {
            let out = route_one(&mut r, &values!["x"]);
            assert_eq!(out.len(), 1);
            *counts.entry(out[0]).or_insert(0) += 1;
        }
        assert_eq!(counts, HashMap::from([(3, 100), (4, 100), (5, 100)]));
    }

    #[test]
    fn fields_sends_equal_keys_to_the_same_task() {
        let mut r = router(GroupingDef::Fields(vec!["word".into()]), vec![0], vec![1, 2, 3, 4]);
        let mut seen = HashMap::new();
        let mut used = HashSet::new();
        for i in 0..400 {
            let word = format!("w{}", i % 40);
            let out = route_one(&mut r, &values![word.as_str(), i]);
            assert_eq!(out.len(), 1);
            used.insert(out[0]);
            assert_eq!(*seen.entry(word).or_insert(out[0]), out[0], "a key moved between tasks");
        }
        assert!(used.len() > 1, "40 keys should use more than one of 4 tasks");
        // A second router (another emitter, another process) agrees.
        let mut other = router(GroupingDef::Fields(vec!["word".into()]), vec![0], vec![1, 2, 3, 4]);
        for (word, task) in &seen {
            assert_eq!(route_one(&mut other, &values![word.as_str(), 0])[0], *task);
        }
    }

    #[test]
    fn partial_key_splits_a_hot_key_over_two_tasks() {
        let mut r = router(GroupingDef::PartialKey(vec!["k".into()]), vec![0], vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let mut counts: HashMap<TaskId, u32> = HashMap::new();
        for _ in 0..1000 {
            let out = route_one(&mut r, &values!["hot"]);
            *counts.entry(out[0]).or_default() += 1;
        }
        // At most two candidates; when they differ the less loaded wins, so the load is even.
        assert!(counts.len() <= 2, "{counts:?}");
        if counts.len() == 2 {
            let v: Vec<u32> = counts.values().copied().collect();
            assert!(v[0].abs_diff(v[1]) <= 1, "{counts:?}");
        }
    }

    #[test]
    fn all_sends_to_every_task() {
        let mut r = router(GroupingDef::All, vec![], vec![7, 8, 9]);
        assert_eq!(route_one(&mut r, &values![1]), vec![7, 8, 9]);
    }

    #[test]
    fn global_sends_to_lowest_task() {
        let mut r = router(GroupingDef::Global, vec![], vec![9, 7, 8]);
        for _ in 0..5 {
            assert_eq!(route_one(&mut r, &values![1]), vec![7]);
        }
    }

    #[test]
    fn direct_sends_only_to_named_subscriber_task() {
        let mut r = router(GroupingDef::Direct, vec![], vec![4, 5]);
        let mut out = Vec::new();
        r.route(&values![1], Some(5), &mut out);
        assert_eq!(out, vec![5]);
        out.clear();
        r.route(&values![1], Some(6), &mut out);
        assert!(out.is_empty());
        r.route(&values![1], None, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn local_or_shuffle_prefers_tasks_in_the_same_worker() {
        let task_worker = [0, 1, 0, 1, 1];
        let s = sub(GroupingDef::LocalOrShuffle, vec![], vec![1, 2, 3, 4]);
        let mut r = Router::new(&s, 0, &task_worker, &Registry::new()).unwrap();
        for _ in 0..10 {
            assert_eq!(route_one(&mut r, &values![1]), vec![2]);
        }
        // No subscriber task in worker 2: shuffle over all.
        let mut r = Router::new(&s, 2, &[0, 1, 0, 1, 1, 2, 2], &Registry::new()).unwrap();
        let seen: HashSet<TaskId> = (0..40).map(|_| route_one(&mut r, &values![1])[0]).collect();
        assert_eq!(seen, HashSet::from([1, 2, 3, 4]));
    }

    #[test]
    fn none_grouping_spreads_like_shuffle() {
        let mut r = router(GroupingDef::None, vec![], vec![1, 2]);
        let seen: HashSet<TaskId> = (0..4).map(|_| route_one(&mut r, &values![1])[0]).collect();
        assert_eq!(seen, HashSet::from([1, 2]));
    }

    struct ByParity {
        tasks: Vec<TaskId>,
    }
    impl CustomGrouping for ByParity {
        fn prepare(&mut self, target_tasks: &[TaskId]) {
            self.tasks = target_tasks.to_vec();
        }
        fn choose_tasks(&mut self, values: &[Value], out: &mut Vec<TaskId>) {
            let n = values[0].as_i64().unwrap_or(0);
            out.push(self.tasks[(n % 2) as usize]);
        }
    }

    #[test]
    fn custom_grouping_routes_where_user_code_says() {
        let mut registry = Registry::new();
        registry.grouping("parity", |_: squall_api::NoConfig| Ok(ByParity { tasks: vec![] }));
        let s = sub(
            GroupingDef::Custom { kind: "parity".into(), config: toml::Table::new() },
            vec![],
            vec![10, 11],
        );
        let mut r = Router::new(&s, 0, &[0; 12], &registry).unwrap();
        assert_eq!(route_one(&mut r, &values![4]), vec![10]);
        assert_eq!(route_one(&mut r, &values![7]), vec![11]);
    }
}
