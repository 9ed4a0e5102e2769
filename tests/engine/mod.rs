//! The engine through the binary: order, edges, conditions, retries,
//! timeouts, gates, repair, approvals, params, crashes and bad input.

mod cel;
mod crash;
mod flow;
mod invalid;
mod resume;
