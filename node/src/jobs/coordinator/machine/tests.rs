//! Unit tests of the coordinator machine: one behaviour each, driven by
//! hand. The random interleavings are in `sim`.
