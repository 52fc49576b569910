//! The hostile-client suite: what an attacker on the network, a local user or a careless
//! operator can send or set, each finding of the adversarial review a test that failed
//! before its fix. One binary, one module per area; `docs/SECURITY.md` is the threat
//! model these tests hold the code to.

mod config;
mod listeners;
mod records;
mod wire;
