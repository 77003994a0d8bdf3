//! Custom groupings: user code that decides which tasks receive a tuple.
//!
//! Contract: a [`CustomGrouping`] is built per emitting task and subscription (from the
//! registry, with its `config` table), told the receiving tasks once in `prepare`, and then
//! asked for every tuple which of them get it. Choosing no task drops the tuple for that
//! subscriber; choosing a task not in the list is reported as an error and the tuple is
//! sent to none of them.

use crate::tuple::TaskId;
use crate::value::Value;

pub trait CustomGrouping: Send + 'static {
    /// The tasks of the subscribing component, in order.
    fn prepare(&mut self, target_tasks: &[TaskId]);

    /// Pushes onto `out` the tasks that receive a tuple with these values.
    fn choose_tasks(&mut self, values: &[Value], out: &mut Vec<TaskId>);
}
