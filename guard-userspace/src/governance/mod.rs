//! Governance over the event log and the policy: least privilege learned
//! from what an agent did (`policy suggest`) and the periodic review of
//! each agent (`review`). A surface: it reads the events layer's log
//! reader and the policy, and nothing imports it but the CLI.
pub mod review;
pub mod review_html;
pub mod suggest;
