//! The analyze function.
