//! FAB-T: written by a helper.
