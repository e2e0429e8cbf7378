//! The process function.
