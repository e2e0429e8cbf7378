//! The analysis engine: per-device state machines over readings in event time.
//!
//! `Engine::process` takes a batch of readings (in arrival order, per device in bus order) and
//! returns insights and alert transitions. It is deterministic: the same state and input give the
//! same output, byte for byte, which is what makes checkpoint/replay and `iotstream replay` exact.
