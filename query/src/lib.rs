//! The query service.
