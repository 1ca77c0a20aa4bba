//! Splitting work into batches by item count and by a byte budget.

/// Limits for one chunk; a chunk closes when either would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Most items in one chunk (at least 1).
    pub max_items: usize,
    /// Most bytes in one chunk, as measured by the caller's weigher. A single
    /// item heavier than this is put alone in its own chunk.
    pub max_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self { max_items: 500, max_bytes: 8 * 1024 * 1024 }
    }
}

/// Splits `items` into chunks of at most `size` items, keeping order.
pub fn chunk_by_count<T>(items: impl IntoIterator<Item = T>, size: usize) -> Vec<Vec<T>> {
    chunk_by_bytes(items, ChunkLimits { max_items: size, max_bytes: usize::MAX }, |_| 0)
}

/// Splits `items` into chunks that respect both `limits`, keeping order.
///
/// `weigh` gives an item's size in bytes. A chunk never exceeds
/// `limits.max_bytes` unless it holds a single item that alone does.
pub fn chunk_by_bytes<T>(
    items: impl IntoIterator<Item = T>,
    limits: ChunkLimits,
    weigh: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let max_items = limits.max_items.max(1);
    let mut chunks = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut current_bytes = 0usize;
    for item in items {
        let bytes = weigh(&item);
        let over_budget = current_bytes.saturating_add(bytes) > limits.max_bytes;
        if !current.is_empty() && (current.len() == max_items || over_budget) {
            chunks.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes = current_bytes.saturating_add(bytes);
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_item_is_alone() {
        let chunks = chunk_by_bytes(vec![1usize, 100, 2], ChunkLimits { max_items: 10, max_bytes: 10 }, |n| *n);
        assert_eq!(chunks, vec![vec![1], vec![100], vec![2]]);
    }

    #[test]
    fn empty_input_gives_no_chunks() {
        assert!(chunk_by_count(Vec::<u8>::new(), 3).is_empty());
    }

    proptest! {
        #[test]
        fn count_chunks_keep_every_item_in_order(items in proptest::collection::vec(any::<u32>(), 0..500), size in 1usize..64) {
            let chunks = chunk_by_count(items.clone(), size);
            prop_assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= size));
            let flat: Vec<u32> = chunks.into_iter().flatten().collect();
            prop_assert_eq!(flat, items);
        }

        #[test]
        fn byte_chunks_respect_budget(weights in proptest::collection::vec(0usize..300, 0..400), max_items in 1usize..50, max_bytes in 1usize..1000) {
            let indexed: Vec<(usize, usize)> = weights.iter().copied().enumerate().collect();
            let chunks = chunk_by_bytes(indexed.clone(), ChunkLimits { max_items, max_bytes }, |(_, w)| *w);
            for chunk in &chunks {
                prop_assert!(!chunk.is_empty() && chunk.len() <= max_items);
                let total: usize = chunk.iter().map(|(_, w)| *w).sum();
                prop_assert!(total <= max_bytes || chunk.len() == 1, "chunk {chunk:?} over budget {max_bytes}");
            }
            // Greedy packing: a chunk was closed only because the next item did not fit.
            for pair in chunks.windows(2) {
                let total: usize = pair[0].iter().map(|(_, w)| *w).sum();
                prop_assert!(pair[0].len() == max_items || total + pair[1][0].1 > max_bytes);
            }
            let flat: Vec<(usize, usize)> = chunks.into_iter().flatten().collect();
            prop_assert_eq!(flat, indexed);
        }
    }
}
