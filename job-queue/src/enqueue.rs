//! Checks and in-batch dedup shared by both backends' enqueue.

use std::collections::HashMap;

use crate::model::{JobId, NewJob, PRIORITY_RANGE, micros, now_micros};
use crate::{QueueError, Result};

/// Inserts a job whose dedup key's job finished between the insert and
/// the lookup of that job at most this often, so the caller always gets an
/// id. Each lost round means a worker finished that key's job, so the
/// queue moved on; with no-op jobs and four callers on one key
/// (PostgreSQL, 2 cores), 5 rounds were lost in a row about once in 7,500
/// enqueues, so the bound is far above that.
pub(crate) const ENQUEUE_ROUNDS: usize = 64;

pub(crate) struct PreparedJob<'a> {
    pub id: JobId,
    pub run_at: i64,
    pub job: &'a NewJob,
}

/// Jobs to insert (first of each dedup key only) and, for every job given,
/// which of them it maps to.
pub(crate) struct Prepared<'a> {
    pub unique: Vec<PreparedJob<'a>>,
    slot_of: Vec<usize>,
}

pub(crate) fn prepare(jobs: &[NewJob]) -> Result<Prepared<'_>> {
    let now = now_micros();
    let mut unique = Vec::with_capacity(jobs.len());
    let mut slot_of = Vec::with_capacity(jobs.len());
    let mut slot_by_key: HashMap<&str, usize> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        validate(index, job)?;
        if let Some(key) = job.options.dedup_key.as_deref() {
            if let Some(&slot) = slot_by_key.get(key) {
                slot_of.push(slot);
                continue;
            }
            slot_by_key.insert(key, unique.len());
        }
        slot_of.push(unique.len());
        let run_at = job.options.run_at.map_or(now, micros);
        unique.push(PreparedJob { id: uuid::Uuid::now_v7(), run_at, job });
    }
    Ok(Prepared { unique, slot_of })
}

fn validate(index: usize, job: &NewJob) -> Result<()> {
    let invalid = |reason: String| Err(QueueError::InvalidJob { index, job_type: job.job_type.clone(), reason });
    if job.job_type.is_empty() || job.job_type.len() > 200 {
        return invalid("job type must be 1-200 characters".to_owned());
    }
    if !PRIORITY_RANGE.contains(&job.options.priority) {
        return invalid(format!("priority {} is outside 1-10", job.options.priority));
    }
    if job.options.max_attempts < 1 {
        return invalid(format!("max_attempts {} must be at least 1", job.options.max_attempts));
    }
    if !job.options.metadata.is_object() {
        return invalid("metadata must be a JSON object".to_owned());
    }
    let size = json_size(&job.input);
    if size > MAX_INPUT_BYTES {
        return invalid(format!(
            "input is {size} bytes; at most {MAX_INPUT_BYTES} (keep large data in the entity store and pass keys)"
        ));
    }
    Ok(())
}

/// Largest job input, as JSON: every claim reads it back, and a row this
/// size already slows the queue for every worker.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Bytes of `value` as JSON, counted without building the text.
fn json_size(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

impl Prepared<'_> {
    /// Maps the ids returned for `unique` (None: lost a dedup race) back
    /// to one id per job given.
    pub fn resolve(&self, ids: &[Option<JobId>]) -> Result<Vec<JobId>> {
        let unique_ids: Vec<JobId> = ids
            .iter()
            .zip(&self.unique)
            .map(|(id, job)| {
                id.ok_or_else(|| {
                    QueueError::Conflict(format!(
                        "job with dedup key {:?} finished {ENQUEUE_ROUNDS} times while being enqueued",
                        job.job.options.dedup_key
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(self.slot_of.iter().map(|&slot| unique_ids[slot]).collect())
    }
}
