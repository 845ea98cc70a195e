//! The imperative shell: caches, indexes, the work queue, metrics and the admin HTTP server.
//! Nothing here decides what a slice should contain; that is the functional core's job.

pub mod admin;
pub mod cache;
pub mod index;
pub mod metrics;
pub mod queue;
