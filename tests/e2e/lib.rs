//! Helpers live in the `e2e` test binary (tests/e2e/main.rs and its modules).
