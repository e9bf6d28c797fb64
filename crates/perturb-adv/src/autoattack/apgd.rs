//! APGD.
