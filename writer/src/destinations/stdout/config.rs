//! Settings of a stdout destination: none beyond its stream. The spec is an
//! empty object so that options can be added without breaking stored specs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSpec {}
