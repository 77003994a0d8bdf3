//! Shipped components.
pub fn registry() -> squall_api::Registry {
    squall_api::Registry::new()
}
