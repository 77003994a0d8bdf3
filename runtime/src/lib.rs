//! Squall runtime.
