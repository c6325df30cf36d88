//! A single-node Garage (S3-compatible object storage): to be written.

pub struct Garage;
