//! The perturb command line (being written).
