//! Behaviour tests of the durable storage, on real files in temporary directories.

mod common;
mod corruption;
mod crash;
mod model;
mod roundtrip;
