//! Test 6: protocol coverage of the OCI distribution spec v1.1, one concern per module, raw API calls.

mod blobs;
mod deletes;
mod manifests;
mod referrers;
mod tags;
mod uploads;
