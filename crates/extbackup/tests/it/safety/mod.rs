//! Issue 18: a drive is untrusted input. `drive`: nothing it holds makes a run touch
//! anything outside it (part A); `generations`: no good generation lost, names and clocks,
//! drives that do not stay red (items 3 to 5).

mod config;
mod drive;
mod generations;
mod outcomes;
