//! A single-node Garage (S3-compatible object storage): placeholder until branch s3 lands.
#![allow(dead_code)]

pub struct Garage;

impl Garage {
    pub fn start() -> Garage {
        panic!("Garage is not wired yet")
    }
    pub fn endpoint(&self) -> String {
        unimplemented!()
    }
    pub fn region(&self) -> String {
        unimplemented!()
    }
    pub fn bucket(&self) -> String {
        unimplemented!()
    }
    pub fn access_key_id(&self) -> String {
        unimplemented!()
    }
    pub fn secret_access_key(&self) -> String {
        unimplemented!()
    }
    pub fn stop(&mut self) {}
    pub fn start_again(&mut self) {}
    pub fn list_keys(&self, _prefix: &str) -> Vec<String> {
        unimplemented!()
    }
}
