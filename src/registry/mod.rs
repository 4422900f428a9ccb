//! Styles by key and the store replicas share: the registry `RegisterStyle` fills (`styles`)
//! and the Redis store behind it and behind the style cache (`shared`), which seals the
//! targets it holds and checks every entry it reads.

pub mod shared;
pub mod styles;

pub use shared::SharedStore;
pub use styles::StyleRegistry;
