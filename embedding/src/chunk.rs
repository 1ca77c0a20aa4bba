//! Splitting long texts into overlapping chunks that fit a model.

use std::ops::Range;

use crate::provider::estimate_tokens;

/// Byte ranges of `text`, each about `max_tokens` estimated tokens at most,
/// each starting `overlap_tokens` before the previous one ended. A text that
/// fits is one chunk; an empty text is no chunk.
pub fn chunk_spans(text: &str, max_tokens: usize, overlap_tokens: usize) -> Vec<Range<usize>> {
    let words: Vec<(usize, usize, usize)> = text
        .split_whitespace()
        .map(|word| {
            let start = word.as_ptr() as usize - text.as_ptr() as usize;
            (start, start + word.len(), estimate_tokens(word).max(1))
        })
        .collect();
    if words.is_empty() {
        return Vec::new();
    }
    let max_tokens = max_tokens.max(1);
    let overlap_tokens = overlap_tokens.min(max_tokens / 2);
    let mut spans = Vec::new();
    let mut first = 0;
    loop {
        let mut tokens = 0;
        let mut last = first;
        while last < words.len() && (last == first || tokens + words[last].2 <= max_tokens) {
            tokens += words[last].2;
            last += 1;
        }
        spans.push(words[first].0..words[last - 1].1);
        if last == words.len() {
            return spans;
        }
        // Step back over `overlap_tokens` worth of words, but always move on.
        let mut back = last;
        let mut overlap = 0;
        while back > first + 1 && overlap + words[back - 1].2 <= overlap_tokens {
            overlap += words[back - 1].2;
            back -= 1;
        }
        first = back;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk_and_empty_is_none() {
        assert_eq!(chunk_spans("  hello world ", 10, 2), vec![2..13]);
        assert!(chunk_spans("   ", 10, 2).is_empty());
    }

    #[test]
    fn long_text_is_covered_with_overlap_within_budget() {
        let text = (0..100).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let spans = chunk_spans(&text, 20, 5);
        assert!(spans.len() > 5);
        for span in &spans {
            assert!(estimate_tokens(&text[span.clone()]) <= 20);
        }
        for pair in spans.windows(2) {
            assert!(pair[1].start < pair[0].end, "chunks overlap");
            assert!(pair[1].start > pair[0].start, "chunks advance");
        }
        assert_eq!(spans[0].start, 0);
        assert_eq!(spans.last().unwrap().end, text.len());
    }

    #[test]
    fn unicode_boundaries_are_kept() {
        let text = "été 🌞 naïve façade ".repeat(50);
        for span in chunk_spans(&text, 7, 2) {
            assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        }
    }
}
