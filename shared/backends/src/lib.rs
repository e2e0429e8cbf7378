//! Engines behind the ports.
