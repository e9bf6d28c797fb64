//! The rayon CPU backend (being written).
