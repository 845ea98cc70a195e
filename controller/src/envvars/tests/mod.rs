//! Tests for the service env core.
