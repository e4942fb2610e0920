//! Settings of a stdout destination: which envelope it prints.

use serde::{Deserialize, Serialize};

use crate::envelope::EnvelopeFormat;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSpec {
    /// strata's envelope (the default), or Debezium's records.
    #[serde(default, skip_serializing_if = "EnvelopeFormat::is_strata")]
    pub envelope: EnvelopeFormat,
}
