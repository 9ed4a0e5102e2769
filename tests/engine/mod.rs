//! The engine through the binary: order, edges, conditions, retries,
//! timeouts, gates, repair, approvals, params, crashes and bad input.

mod cel;
mod crash;
mod decisions;
mod durable;
mod flow;
mod groups;
mod invalid;
mod processes;
mod resume;
mod robust;
