//! The EndpointSlice controller's functional core.
