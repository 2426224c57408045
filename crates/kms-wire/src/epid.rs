//! Extended PIDs (PROTOCOL.md §8).
