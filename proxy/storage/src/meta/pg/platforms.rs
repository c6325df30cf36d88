//! `platforms.rs` on Postgres.

use super::Pg;

impl Pg {}
