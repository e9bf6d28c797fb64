//! Autograd (being written).
