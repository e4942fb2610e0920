//! Delivery schedules. The grammar (`continuous`, `every 10m`, five-field
//! cron) is shared with the reader's query pulls, so it lives in
//! [`strata_common::config::schedule`]; this module keeps the writer's path to it.

pub use strata_common::config::schedule::{Cron, Schedule};
