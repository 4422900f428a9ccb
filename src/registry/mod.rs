//! Styles by key and name, and the store replicas share: the registry `RegisterStyle` fills
//! (`styles`), the names and facts it keeps (`names`), and the Redis store behind it and
//! behind the style cache (`shared`), which seals the targets it holds and checks every
//! entry it reads.

pub mod names;
pub mod shared;
pub mod styles;

pub use names::{Labels, Listing, Naming};
pub use shared::SharedStore;
pub use styles::{Described, Page, Registered, StyleRegistry};
