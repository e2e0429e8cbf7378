//! The notify function.
