//! Squall runtime.

pub mod topology;
