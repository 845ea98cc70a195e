//! epslice: Kubernetes endpoint controllers (EndpointSlice, Endpoints, mirroring) and a
//! service-discovery env-var webhook, built as a functional core and an imperative shell.
//!
//! The functional core (`podutil`, `endpointslice`, `envvars`, …) is plain functions of
//! snapshots of API objects: no client, no clock, no I/O. The shell watches, indexes, queues
//! and applies the plans the core computes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod controllers;
pub mod endpoints;
pub mod endpointslice;
pub mod envpolicy;
pub mod envvars;
pub mod mirroring;
pub mod pod;
pub mod podutil;
pub mod runtime;
pub mod verify;
pub mod webhook;
