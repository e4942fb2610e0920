//! `strata-stage verify`: checks a stream's stage end to end.
//!
//! Every seq from the low-water mark to the head must have a manifest that
//! decodes and validates; every file it references must exist with the
//! recorded size and checksum, be readable Parquet, and hold the recorded
//! number of rows. Problems are collected, not fatal: one run reports all.

use serde::Serialize;

use crate::codec::parquet_row_count;
use crate::error::{Result, StageError};
use crate::log::{StreamLog, check_file};

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub stream: String,
    pub batches: u64,
    pub files: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub async fn verify_stream(log: &StreamLog) -> Result<VerifyReport> {
    let stage = log.stage();
    let keys = log.keys();
    let mut report = VerifyReport { stream: keys.stream().to_owned(), ..Default::default() };
    let low = log.low().await?;
    let listed = log.list_seqs().await?;
    let Some(&last) = listed.last() else {
        return Ok(report);
    };
    let mut problem = |seq: Option<u64>, key: String, message: String| report.problems.push(Problem { seq, key, message });
    let mut files = 0u64;
    let mut batches = 0u64;
    let mut expected = low;
    for &seq in listed.iter().filter(|s| **s >= low) {
        if seq != expected {
            problem(Some(expected), keys.manifest(expected).to_string(), format!("seqs {expected}..{} are missing (gap in the log)", seq - 1));
        }
        expected = seq + 1;
        batches += 1;
        let m = match log.read(seq).await {
            Ok(m) => m,
            Err(e @ (StageError::Corrupt { .. } | StageError::NotFound { .. })) => {
                problem(Some(seq), keys.manifest(seq).to_string(), e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        for f in &m.files {
            files += 1;
            let path = f.key()?;
            let bytes = match stage.get_opt(&path).await? {
                Some(b) => b,
                None => {
                    problem(Some(seq), f.path.clone(), "missing: referenced by the manifest but not in the stage".to_owned());
                    continue;
                }
            };
            if let Err(e) = check_file(&path, f, &bytes) {
                problem(Some(seq), f.path.clone(), e.to_string());
                continue;
            }
            match parquet_row_count(&path, bytes) {
                Ok(n) if n == f.rows => {}
                Ok(n) => problem(Some(seq), f.path.clone(), format!("holds {n} rows, manifest says {}", f.rows)),
                Err(e) => problem(Some(seq), f.path.clone(), e.to_string()),
            }
        }
    }
    debug_assert!(expected == last + 1);
    report.batches = batches;
    report.files = files;
    Ok(report)
}
