//! The mover stopped in each phase: resume finishes the move, abort leaves
//! the source intact and serving.
