//! Shipped components.
