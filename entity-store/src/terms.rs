//! Full-text terms for scripts written without spaces between words.
//!
//! Word tokenizers (SQLite FTS5 `unicode61`, PostgreSQL's default parser
//! with the `simple` configuration) split words at spaces and punctuation
//! only, so a run of Chinese, Japanese, Korean, Thai, Lao,
//! Khmer or Myanmar text is one long token and no word inside it can be
//! found; a latin word glued to such a run (`gen-itgc后`) is lost too.
//!
//! The rule here is the one of Lucene's `CJKBigramFilter`, applied before
//! either tokenizer sees the text: each run of those scripts is indexed as
//! its single characters and its overlapping pairs (`适者生存` → `适 者 生
//! 存 适者 者生 生存`), set apart from the text around it by spaces. A query
//! word of such a run matches when all its pairs are present (a single
//! character matches itself), so `生存` finds `适者生存` and `itgc` finds
//! `gen-itgc后`. Text with no such character is left as it is: English is
//! indexed and ranked exactly as before.
//!
//! The ranges are Unicode blocks. SQLite passes every row through
//! [`index_text`] before FTS5 tokenises it; on PostgreSQL the store
//! tokenises rows itself ([`tsvector_binary`], [`for_each_index_term`]),
//! so its parser sees neither the rows nor the queries.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

/// Blocks of scripts written without spaces between words (first, last).
/// Han (radicals, ideographs, extensions, compatibility), kana, Hangul,
/// Thai, Lao, Myanmar and Khmer.
const UNSPACED: [(char, char); 19] = [
    ('\u{0E00}', '\u{0EFF}'),   // Thai, Lao
    ('\u{1000}', '\u{109F}'),   // Myanmar
    ('\u{1100}', '\u{11FF}'),   // Hangul Jamo
    ('\u{1780}', '\u{17FF}'),   // Khmer
    ('\u{19E0}', '\u{19FF}'),   // Khmer symbols
    ('\u{2E80}', '\u{2FDF}'),   // CJK and Kangxi radicals
    ('\u{3005}', '\u{3007}'),   // 々 〆 〇
    ('\u{3021}', '\u{3029}'),   // Hangzhou numerals
    ('\u{3040}', '\u{30FF}'),   // Hiragana, Katakana
    ('\u{3131}', '\u{318E}'),   // Hangul compatibility Jamo
    ('\u{31F0}', '\u{31FF}'),   // Katakana phonetic extensions
    ('\u{3400}', '\u{4DBF}'),   // CJK extension A
    ('\u{4E00}', '\u{9FFF}'),   // CJK unified ideographs
    ('\u{A960}', '\u{A97F}'),   // Hangul Jamo extended A
    ('\u{AC00}', '\u{D7FF}'),   // Hangul syllables, Jamo extended B
    ('\u{F900}', '\u{FAFF}'),   // CJK compatibility ideographs
    ('\u{FF66}', '\u{FF9F}'),   // halfwidth Katakana
    ('\u{1B000}', '\u{1B16F}'), // kana supplement and extensions
    ('\u{20000}', '\u{323AF}'), // CJK extensions B to H, compatibility supplement
];

/// Whether `c` belongs to a script written without spaces.
pub fn is_unspaced(c: char) -> bool {
    // Most text is below the first block: no search of the table.
    c >= UNSPACED[0].0 && UNSPACED.iter().any(|&(first, last)| (first..=last).contains(&c))
}

/// Each term to index in `text`, in order: every word ([`for_each_part`]),
/// folded ([`fold_case_into`]); a run of an unspaced script stands for its
/// characters, then its pairs, as in [`index_text`].
pub fn for_each_index_term(text: &str, mut term: impl FnMut(&str)) {
    let mut lower = String::new();
    for_each_part(text, |part, unspaced| {
        if !unspaced {
            if part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                term(part);
            } else {
                lower.clear();
                if part.is_ascii() {
                    // The common case, without `fold_case_into`'s per-character Unicode tables.
                    lower.push_str(part);
                    lower.make_ascii_lowercase();
                } else {
                    fold_case_into(part, &mut lower);
                }
                term(&lower);
            }
            return;
        }
        let bounds: Vec<usize> = part.char_indices().map(|(i, _)| i).chain([part.len()]).collect();
        for pair in bounds.windows(2) {
            term(&part[pair[0]..pair[1]]);
        }
        for triple in bounds.windows(3) {
            term(&part[triple[0]..triple[2]]);
        }
    });
}

/// Each word of `text` (split at anything not a letter, digit or combining mark), cut
/// where it goes in or out of an unspaced script: the part, and whether it
/// is of such a script. Index and queries split text this one way.
fn for_each_part(text: &str, mut part: impl FnMut(&str, bool)) {
    // Combining marks belong to their word, as in SQLite's `unicode61`: a
    // decomposed `é`, a Devanagari virama.
    let in_word = |c: char| c.is_alphanumeric() || (!c.is_ascii() && unicode_normalization::char::is_combining_mark(c));
    for word in text.split(|c: char| !in_word(c)).filter(|w| !w.is_empty()) {
        let mut rest = word;
        while let Some(first) = rest.chars().next() {
            let unspaced = is_unspaced(first);
            let end = rest.find(|c: char| is_unspaced(c) != unspaced).unwrap_or(rest.len());
            let (this, tail) = rest.split_at(end);
            rest = tail;
            part(this, unspaced);
        }
    }
}

/// `text` lowercased into `out`, with a final sigma as any other sigma (a
/// word's last letter is `ς` in lowercase text and `Σ` in capitals) and
/// Latin letters without their diacritics (`é` as `e`), as SQLite's
/// `unicode61` tokenizer folds them: `cafe` finds `Café`, and so does a
/// `café` typed with a combining accent.
pub fn fold_case_into(text: &str, out: &mut String) {
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'ς' => out.push('σ'),
            // A diacritic typed as its own character (Combining Diacritical
            // Marks, the block Latin letters decompose to).
            '\u{0300}'..='\u{036F}' => {}
            c if c.is_ascii() || !is_latin(c) => out.push(c),
            c => unicode_normalization::char::decompose_canonical(c, |part| {
                if !unicode_normalization::char::is_combining_mark(part) {
                    out.push(part);
                }
            }),
        }
    }
}

/// Latin letters with diacritics: Latin-1 Supplement to Latin Extended-B,
/// and Latin Extended Additional (Vietnamese).
fn is_latin(c: char) -> bool {
    matches!(c, '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}')
}

/// Longest lexeme PostgreSQL keeps, in bytes (`MAXSTRLEN`); its own
/// parser drops longer words too.
pub(crate) const MAX_LEXEME_BYTES: usize = 2047;
/// Positions PostgreSQL keeps per lexeme (`MAXNUMPOS`).
const MAX_POSITIONS: usize = 256;
/// Highest position PostgreSQL stores (`MAXENTRYPOS - 1`); later words share it.
const MAX_POSITION: u32 = 16_383;

/// A PostgreSQL `tsvector` in its binary wire form (`tsvectorrecv`: the
/// count of lexemes, then each lexeme NUL-terminated, its count of
/// positions and each position as 16 bits, the weight in the top two) of
/// `title`'s terms (weight A) followed by `content`'s (weight B), by
/// [`for_each_index_term`]: what
/// `setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', content), 'B')`
/// gives, but tokenised here, where queries are too ([`query_groups`]).
/// PostgreSQL's own parser read about 9 MB/s of UTF-8 text: 2 of the 3 s
/// a first index of the 18 MB windows-powershell-docs corpus took; the
/// text form of the same vectors took 0.5 s more to read than this one.
pub fn tsvector_binary(title: &str, content: &str) -> Vec<u8> {
    // Each distinct lexeme once, with its positions in the order met, which
    // is increasing: a note of 2 KB has a few hundred words but only tens
    // of distinct ones, so only those are sorted (sorting every occurrence
    // was four fifths of the time).
    let mut lexemes: FxHashMap<Box<str>, Vec<u16>> = FxHashMap::default();
    let mut position = 0u32;
    for (text, weight) in [(title, WEIGHT_A), (content, WEIGHT_B)] {
        for_each_index_term(text, |term| {
            position = (position + 1).min(MAX_POSITION);
            if term.len() > MAX_LEXEME_BYTES {
                return;
            }
            // MAX_POSITION fits 14 bits, the weight takes the top two.
            let entry = weight | position as u16;
            match lexemes.get_mut(term) {
                // Distinct (past the highest position, words share it) and at most MAX_POSITIONS.
                Some(kept) => {
                    if kept.len() < MAX_POSITIONS && kept.last().is_none_or(|&last| last & 0x3FFF != entry & 0x3FFF) {
                        kept.push(entry);
                    }
                }
                None => {
                    lexemes.insert(term.into(), vec![entry]);
                }
            }
        });
    }
    // PostgreSQL keeps lexemes in byte order, shorter first on a tie (`tsCompareString`).
    let mut sorted: Vec<(Box<str>, Vec<u16>)> = lexemes.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // What PostgreSQL counts against its limit: each lexeme, aligned, and
    // its positions with their count.
    let cost = |(lexeme, positions): &(Box<str>, Vec<u16>)| lexeme.len() + 1 + 2 * (positions.len() + 1);
    if sorted.iter().map(cost).sum::<usize>() > MAX_VECTOR_BYTES {
        // Too many distinct words for one value: the ones met first stay.
        let mut first_met: Vec<usize> = (0..sorted.len()).collect();
        first_met.sort_unstable_by_key(|&i| sorted[i].1[0] & 0x3FFF);
        let mut keep = vec![false; sorted.len()];
        let mut used = 0;
        for i in first_met {
            if used + cost(&sorted[i]) <= MAX_VECTOR_BYTES {
                used += cost(&sorted[i]);
                keep[i] = true;
            }
        }
        let mut flags = keep.into_iter();
        sorted.retain(|_| flags.next().unwrap_or(false));
    }
    let mut out = Vec::with_capacity(4 + sorted.iter().map(cost).sum::<usize>());
    out.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
    for (lexeme, positions) in &sorted {
        out.extend_from_slice(lexeme.as_bytes());
        out.push(0);
        out.extend_from_slice(&(positions.len() as u16).to_be_bytes());
        for position in positions {
            out.extend_from_slice(&position.to_be_bytes());
        }
    }
    out
}

/// PostgreSQL's limit on a `tsvector`'s lexemes and positions (`MAXSTRPOS`,
/// 1 MB), less a margin for its alignment: a note with more distinct words
/// is indexed by the words it has first.
const MAX_VECTOR_BYTES: usize = 1_000_000;

/// Weights as `tsvector` stores them, in a position's top two bits.
const WEIGHT_A: u16 = 3 << 14;
const WEIGHT_B: u16 = 2 << 14;

/// The text to index for `text`: unchanged when it holds no unspaced
/// script, otherwise each run of one replaced by its characters and pairs.
pub fn index_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unspaced) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() * 3);
    let mut run: Vec<char> = Vec::new();
    for c in text.chars() {
        if is_unspaced(c) && c.is_alphanumeric() {
            run.push(c);
        } else {
            push_run(&mut out, &mut run);
            out.push(c);
        }
    }
    push_run(&mut out, &mut run);
    Cow::Owned(out)
}

/// Appends a run's characters and pairs, spaced, and empties it.
fn push_run(out: &mut String, run: &mut Vec<char>) {
    if run.is_empty() {
        return;
    }
    out.push(' ');
    for c in run.iter() {
        out.push(*c);
        out.push(' ');
    }
    for pair in run.windows(2) {
        out.push(pair[0]);
        out.push(pair[1]);
        out.push(' ');
    }
    run.clear();
}

/// A search query as alternatives, each a set of terms that must all be
/// present: the words of `query` (as [`for_each_part`] splits them), a run of an unspaced script standing for its pairs. Empty when
/// the query has no word.
pub fn query_groups(query: &str) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    for_each_part(query, |part, unspaced| {
        let chars: Vec<char> = part.chars().collect();
        groups.push(if !unspaced || chars.len() == 1 {
            vec![part.to_owned()]
        } else {
            chars.windows(2).map(|pair| pair.iter().collect()).collect()
        });
    });
    groups
}

/// [`query_groups`] in a backend's query syntax: each term through
/// `quote` (`None` drops it: a word the index cannot hold), the terms of a
/// group joined by `and` (in parentheses), the groups by `or`. `None` when
/// the query has no word left.
pub fn render_query(query: &str, quote: impl Fn(&str) -> Option<String>, and: &str, or: &str) -> Option<String> {
    let groups: Vec<String> = query_groups(query)
        .iter()
        .filter_map(|group| {
            let terms: Vec<String> = group.iter().filter_map(|term| quote(term)).collect();
            match terms.as_slice() {
                [] => None,
                [one] => Some(one.clone()),
                all => Some(format!("({})", all.join(and))),
            }
        })
        .collect();
    (!groups.is_empty()).then(|| groups.join(or))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_become_characters_and_pairs_and_other_text_stays() {
        let cases = [
            ("plain English, unchanged", "plain English, unchanged"),
            ("适者生存", " 适 者 生 存 适者 者生 生存 "),
            ("gen-itgc后", "gen-itgc 后 "),
            ("しりとり!", " し り と り しり りと とり !"),
            ("한국어를 배워요", " 한 국 어 를 한국 국어 어를   배 워 요 배워 워요 "),
            ("ภาษา", " ภ า ษ า ภา าษ ษา "),
        ];
        for (text, expected) in cases {
            assert_eq!(index_text(text), expected, "{text}");
        }
        assert!(matches!(index_text("no change"), Cow::Borrowed(_)));
    }

    #[test]
    fn index_terms_are_lowercased_words_and_the_characters_and_pairs_of_runs() {
        let cases: [(&str, Vec<&str>); 7] = [
            ("Get-DnsServerZone, 3.14!", vec!["get", "dnsserverzone", "3", "14"]),
            ("ÉCOLE Straße ΣΊΣΥΦΟΣ", vec!["ecole", "straße", "σίσυφοσ"]),
            ("Café cafe\u{301} Łódź tiếng", vec!["cafe", "cafe", "łodz", "tieng"]),
            ("适者生存", vec!["适", "者", "生", "存", "适者", "者生", "生存"]),
            ("gen-itgc后", vec!["gen", "itgc", "后"]),
            ("it's a\\b", vec!["it", "s", "a", "b"]),
            ("  -- ", vec![]),
        ];
        for (text, expected) in cases {
            let mut terms = Vec::new();
            for_each_index_term(text, |term| terms.push(term.to_owned()));
            assert_eq!(terms, expected, "{text}");
        }
    }

    #[test]
    fn tsvectors_weigh_titles_and_keep_postgres_limits() {
        // Back to (lexeme, "1A,2B") pairs, as PostgreSQL would print them.
        let parse = |bytes: &[u8]| -> Vec<(String, String)> {
            let be16 = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            let count = u32::from_be_bytes(bytes[..4].try_into().unwrap());
            let (mut at, mut entries) = (4, Vec::new());
            for _ in 0..count {
                let end = at + bytes[at..].iter().position(|&b| b == 0).unwrap();
                let lexeme = String::from_utf8(bytes[at..end].to_vec()).unwrap();
                let positions = be16(end + 1);
                at = end + 3;
                let mut shown = Vec::new();
                for _ in 0..positions {
                    let weight = ['D', 'C', 'B', 'A'][usize::from(be16(at) >> 14)];
                    shown.push(format!("{}{weight}", be16(at) & 0x3FFF));
                    at += 2;
                }
                entries.push((lexeme, shown.join(",")));
            }
            assert_eq!(at, bytes.len(), "nothing after the last lexeme");
            let mut sorted = entries.clone();
            sorted.sort();
            assert_eq!(entries, sorted, "lexemes in byte order, as PostgreSQL keeps them");
            entries
        };
        let found = parse(&tsvector_binary("Bread", "bread and Butter"));
        let expected = [("and", "3B"), ("bread", "1A,2B"), ("butter", "4B")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(l, p)| ((*l).to_owned(), (*p).to_owned())).collect();
        assert_eq!(found, expected);

        let many = "word ".repeat(20_000);
        let positions = &parse(&tsvector_binary("", &many))[0].1;
        assert_eq!(positions.split(',').count(), MAX_POSITIONS, "at most 256 positions per lexeme");
        let long = format!("short {}", "x".repeat(MAX_LEXEME_BYTES + 1));
        assert_eq!(parse(&tsvector_binary("", &long)), vec![("short".to_owned(), "1B".to_owned())]);
        // Distinct words past PostgreSQL's 1 MB for one value: the first ones stay, within it.
        let distinct: String = (0..200_000).map(|i| format!("w{i:06}")).collect::<Vec<_>>().join(" ");
        let kept = parse(&tsvector_binary("Title", &distinct));
        let bytes: usize = kept.iter().map(|(l, p)| l.len() + 1 + 2 * (p.split(',').count() + 1)).sum();
        assert!(bytes <= MAX_VECTOR_BYTES && kept.len() > 50_000, "{} lexemes, {bytes} bytes", kept.len());
        assert!(kept.iter().any(|(l, _)| l == "title") && kept.iter().any(|(l, _)| l == "w000000"));
        assert!(!kept.iter().any(|(l, _)| l == "w199999"), "the last words go");
        let far = format!("{}end", "w ".repeat(20_000));
        let end = parse(&tsvector_binary("", &far)).into_iter().find(|(l, _)| l == "end").unwrap();
        assert_eq!(end.1, format!("{MAX_POSITION}B"), "positions stop at PostgreSQL's highest");
    }

    #[test]
    fn queries_split_into_words_and_pairs() {
        let cases: [(&str, Vec<Vec<&str>>); 6] = [
            ("flour water", vec![vec!["flour"], vec!["water"]]),
            ("生存", vec![vec!["生存"]]),
            ("适者生存", vec![vec!["适者", "者生", "生存"]]),
            ("itgc后", vec![vec!["itgc"], vec!["后"]]),
            ("悬空 rust", vec![vec!["悬空"], vec!["rust"]]),
            ("  -- ", vec![]),
        ];
        for (query, expected) in cases {
            assert_eq!(query_groups(query), expected, "{query}");
        }
    }

    #[test]
    fn queries_render_in_each_syntax() {
        let quote = |term: &str| (term != "drop").then(|| format!("<{term}>"));
        assert_eq!(
            render_query("rust 适者生存", quote, " & ", " | ").as_deref(),
            Some("<rust> | (<适者> & <者生> & <生存>)")
        );
        assert_eq!(render_query("!?", quote, " & ", " | "), None);
        assert_eq!(render_query("drop", quote, " & ", " | "), None, "no word left");
        assert_eq!(render_query("a drop b", quote, " & ", " | ").as_deref(), Some("<a> | <b>"));
    }

    #[test]
    fn every_listed_script_is_unspaced_and_spaced_ones_are_not() {
        for c in ['适', 'し', 'カ', 'ｶ', '한', 'ᄀ', 'ภ', 'ກ', 'က', 'ក', '𠀀', '々'] {
            assert!(is_unspaced(c), "{c} U+{:04X}", u32::from(c));
        }
        for c in ['a', 'é', 'Ж', 'ك', 'א', 'अ', '1', ' ', '。', '，'] {
            assert!(!is_unspaced(c), "{c} U+{:04X}", u32::from(c));
        }
    }
}
