//! Real servers for the tests that exercise wharf's shared backends: Postgres (Debian's `postgresql`)
//! and Garage (built by `tests/setup.sh`). Each test starts its own, on free loopback ports, and it
//! stops when dropped. A `Relay` in front of one makes the network faults a
//! real server will not make on cue. A missing server fails the test with how to install it; nothing is skipped.

mod garage;
mod pki;
pub mod postgres;
mod relay;
mod util;

pub use garage::Garage;
pub use postgres::Postgres;
pub use relay::Relay;
pub use util::free_port;
