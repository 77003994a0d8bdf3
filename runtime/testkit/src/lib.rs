//! # squall-testkit
//!
//! What Squall's tests and benchmarks run against, kept out of every library's public
//! surface: [`tools`] finds or installs outside programs once, [`tansu`] starts a private
//! Tansu broker (Kafka API) on 127.0.0.1 in a directory of the caller's, [`kafka`]
//! creates, fills and reads back Kafka topics around a topology, [`python`] makes a
//! Python with pystorm for the multi-lang tests, [`redis`] starts a private Redis server, and
//! [`etcd`] a private etcd.

pub mod etcd;
pub mod kafka;
pub mod python;
pub mod redis;
pub mod tansu;
pub mod tools;
