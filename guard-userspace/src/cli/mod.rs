//! One file per verb; `args` holds the grammar.
pub mod args;
pub mod daemon;
pub mod doctor;
pub mod policy;
pub mod run;
