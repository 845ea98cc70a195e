//! epslice: Kubernetes endpoint controllers (EndpointSlice, Endpoints, mirroring) and a
//! service-discovery env-var webhook, built as a functional core and an imperative shell.
#![forbid(unsafe_code)]
