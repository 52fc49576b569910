//! The commands that drive the engine from outside the daemon, above the server layer:
//! `ingest` (old logs into the state with the daemon stopped), `replay` (old logs through
//! a fresh engine: "what would these rules have done"), `parse` (a log's events and dead
//! letters), `audit` (`verify` and `search` on the trail), `report` (what an auditor hands
//! over, from the trail) and `demo`.

pub mod audit;
pub mod demo;
pub mod ingest;
pub mod parse;
pub mod replay;
pub mod report;
