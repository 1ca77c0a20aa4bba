//! `search`: text, vector or hybrid search from the command line.

use crate::cli::Mode;
use crate::display::Output;
use crate::open::{folder_embedder, open_existing_database};
use anyhow::{Result, bail};
use embedding::Search;
use serde_json::json;
use std::path::Path;

pub(crate) async fn search(
    database: Option<&str>,
    folder: &Path,
    query: &str,
    mode: Mode,
    limit: usize,
    output: Output,
) -> Result<i32> {
    if query.trim().is_empty() {
        bail!("the query is empty: give some words to look for");
    }
    let db = open_existing_database(database, folder).await?;
    let search = Search { store: db.store.clone(), vectors: db.vectors().await?, embedder: folder_embedder(folder)? };
    if matches!(mode, Mode::Vector) && search.embedder.is_none() {
        bail!(
            "vector search needs vectors, and {} keeps none: sync it once with `--embedder lexical` (hashed words and trigrams, not semantic), or search with --mode text or hybrid",
            folder.display()
        );
    }
    let hits = match mode {
        Mode::Text => search.text(query, limit, None).await?,
        Mode::Vector => search.vector(query, limit, None).await?,
        Mode::Hybrid => search.hybrid(query, limit, None).await?,
    };
    if output.json {
        let hits: Vec<_> = hits.iter().map(|h| json!({"key": h.key, "score": h.score, "snippet": h.snippet})).collect();
        outln!("{}", json!({ "hits": hits }));
    } else if hits.is_empty() {
        outln!("nothing matched {query:?}");
    } else {
        for hit in &hits {
            outln!("{:.3}  {}  {}", hit.score, hit.key, hit.snippet.replace('\n', " "));
        }
    }
    Ok(0)
}
