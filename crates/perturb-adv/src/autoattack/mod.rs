//! AutoAttack (Croce & Hein, ICML 2020), the field's reference evaluation, "standard" version:
//! APGD-CE, APGD-T (targeted DLR), FAB-T and Square with 5,000 queries, run in that order, each
//! on the points every earlier attack failed to break.

pub mod apgd;
pub mod fab;
pub mod losses;
