//! The end state every reliability scenario must reach once its jobs have
//! ended: each note file is an entity with the file's content, each entity
//! has its file, the sync state records every file with its current hashes,
//! no file is cut short, and no job is left queued, running or failed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use directory_sync::{Database, codec, layout::Layout};
use entity_store::{Entity, EntityKey};
use job_queue::{JobFilter, JobState};

use crate::bench::sync::NOTE_END;

/// What was found; `problems` is empty when folder and database agree.
#[derive(Debug, Default)]
pub struct Agreement {
    pub files: usize,
    pub entities: usize,
    /// Temp files of interrupted atomic writes: hidden, never imported.
    pub temp_files: usize,
    pub jobs_by_state: BTreeMap<&'static str, usize>,
    /// Type, state and last error of the first few jobs that did not complete.
    pub unfinished: Vec<String>,
    pub problems: Vec<String>,
}

impl Agreement {
    /// The first few problems, for a FAIL line.
    pub fn sample(&self) -> String {
        let shown: Vec<&str> = self.problems.iter().take(5).map(String::as_str).collect();
        format!("{} problems: {}", self.problems.len(), shown.join("; "))
    }

    /// Jobs by state, and why the first few did not complete.
    pub fn jobs_summary(&self) -> String {
        if self.unfinished.is_empty() {
            format!("{:?}", self.jobs_by_state)
        } else {
            format!("{:?}; {}", self.jobs_by_state, self.unfinished.join("; "))
        }
    }

    pub fn unfinished_jobs(&self) -> usize {
        self.jobs_by_state.iter().filter(|(state, _)| **state != "completed").map(|(_, n)| n).sum()
    }
}

pub async fn compare(db: &Database, root: &Path, layout: &Layout) -> Result<Agreement> {
    let root = root.canonicalize()?;
    let mut agreement = Agreement::default();
    let files = note_files(&root, &mut agreement)?;
    let entities = all_entities(db).await?;
    let state = db.state.files(&root.to_string_lossy()).await?;
    agreement.files = files.len();
    agreement.entities = entities.len();
    let mut matched = std::collections::HashSet::new();
    for (relative, bytes) in &files {
        let key = match layout.key_for(relative) {
            Ok(key) => key,
            Err(err) => {
                agreement.problems.push(format!("{relative}: no entity key: {err}"));
                continue;
            }
        };
        matched.insert(key.clone());
        let Some(entity) = entities.get(&key) else {
            agreement.problems.push(format!("{relative}: no entity"));
            continue;
        };
        agreement.problems.extend(file_against_entity(relative, bytes, entity));
        match state.get(relative) {
            None => agreement.problems.push(format!("{relative}: not in the sync state")),
            Some(row) if row.file_hash != blake3::hash(bytes).to_hex().as_str() => {
                agreement.problems.push(format!("{relative}: sync state has another file hash"));
            }
            Some(row) if row.entity_hash != entity.content_hash => {
                agreement.problems.push(format!("{relative}: sync state has another entity hash"));
            }
            Some(_) => {}
        }
    }
    for key in entities.keys().filter(|key| !matched.contains(*key)) {
        agreement.problems.push(format!("entity {}/{}: no file", key.entity_type, key.id));
    }
    for path in state.keys().filter(|path| !files.contains_key(*path)) {
        agreement.problems.push(format!("{path}: in the sync state but not on disk"));
    }
    for state in JobState::ALL {
        let filter = JobFilter { state: Some(state), limit: Some(1_000_000), ..JobFilter::default() };
        let jobs = db.queue.list(&filter).await?;
        if jobs.is_empty() {
            continue;
        }
        agreement.jobs_by_state.insert(state.as_str(), jobs.len());
        if state != JobState::Completed {
            let described = jobs.iter().take(3).map(|job| {
                format!(
                    "{} {} (attempt {}): {}",
                    job.job_type,
                    state.as_str(),
                    job.attempt,
                    job.last_error.as_deref().unwrap_or("no error")
                )
            });
            agreement.unfinished.extend(described);
        }
    }
    Ok(agreement)
}

fn file_against_entity(relative: &str, bytes: &[u8], entity: &Entity) -> Vec<String> {
    let mut problems = Vec::new();
    let doc = match codec::parse(bytes) {
        Ok(doc) => doc,
        Err(err) => return vec![format!("{relative}: unreadable: {err}")],
    };
    if !doc.content.ends_with(NOTE_END) {
        problems.push(format!("{relative}: cut short (no end marker)"));
    }
    if doc.content != entity.content {
        problems.push(format!("{relative}: content differs from its entity"));
    }
    if doc.metadata != entity.metadata {
        problems.push(format!("{relative}: metadata differs from its entity"));
    }
    problems
}

/// Visible `.md` files by relative path; counts our temp files on the way.
fn note_files(root: &Path, agreement: &mut Agreement) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let state_dir = directory_sync::state_dir(root);
    for entry in walkdir::WalkDir::new(root).into_iter().filter_entry(|e| e.path() != state_dir) {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.starts_with(".directory-sync-") && name.ends_with(".tmp") {
            agreement.temp_files += 1;
        }
        let hidden =
            entry.path().strip_prefix(root)?.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
        if hidden || !name.ends_with(".md") {
            continue;
        }
        let relative = entry.path().strip_prefix(root)?.to_string_lossy().into_owned();
        files.insert(relative, std::fs::read(entry.path())?);
    }
    Ok(files)
}

async fn all_entities(db: &Database) -> Result<HashMap<EntityKey, Entity>> {
    Ok(db.store.batch_get(&all_keys(db).await?).await?)
}

/// Every live entity's key, page by page.
pub async fn all_keys(db: &Database) -> Result<Vec<EntityKey>> {
    let mut keys = Vec::new();
    let mut after: Option<EntityKey> = None;
    loop {
        let page = db.store.list_hashes(after.as_ref(), 5_000).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        keys.extend(page.into_iter().map(|(key, _)| key));
    }
    Ok(keys)
}
