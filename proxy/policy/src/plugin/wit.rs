//! The interface plugins are built against: its package name and its text.

/// The WIT package every plugin is built against; frozen (see `wit/README.md`).
pub const WIT_PACKAGE: &str = "wharf:policy@0.1.0";
/// The text of `wit/policy.wit`, for `wharf plugins new` and the frozen-interface test.
pub const WIT_TEXT: &str = include_str!("../../../../wit/policy.wit");
