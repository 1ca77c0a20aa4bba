//! Full-text terms for scripts written without spaces between words.
//!
//! Both backends' tokenizers (SQLite FTS5 `unicode61`, PostgreSQL's
//! default parser with the `simple` configuration) split words at spaces
//! and punctuation only, so a run of Chinese, Japanese, Korean, Thai, Lao,
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
//! The ranges are Unicode blocks, kept here (rather than a script crate's
//! tables) because PostgreSQL picks the rows to index here with a regular
//! expression of the same ranges ([`regex_class`]). SQLite passes every row
//! through [`index_text`]: its `GLOB` of these ranges was slower than that.

use std::borrow::Cow;

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
    UNSPACED.iter().any(|&(first, last)| (first..=last).contains(&c))
}

/// A PostgreSQL regular expression matching text that holds such a
/// character: `[a-bc-d…]` over the blocks.
pub fn regex_class() -> String {
    let mut class = String::from("[");
    for &(first, last) in &UNSPACED {
        class.push(first);
        class.push('-');
        class.push(last);
    }
    class.push(']');
    class
}

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
/// present: the words of `query` (split at anything not a letter or
/// digit), a run of an unspaced script standing for its pairs. Empty when
/// the query has no word.
pub fn query_groups(query: &str) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let mut rest = word;
        while let Some(first) = rest.chars().next() {
            let unspaced = is_unspaced(first);
            let end = rest.find(|c: char| is_unspaced(c) != unspaced).unwrap_or(rest.len());
            let (part, tail) = rest.split_at(end);
            rest = tail;
            if !unspaced {
                groups.push(vec![part.to_owned()]);
                continue;
            }
            let chars: Vec<char> = part.chars().collect();
            let group = if chars.len() == 1 {
                vec![part.to_owned()]
            } else {
                chars.windows(2).map(|pair| pair.iter().collect()).collect()
            };
            groups.push(group);
        }
    }
    groups
}

/// [`query_groups`] in a backend's query syntax: each term through
/// `quote`, the terms of a group joined by `and` (in parentheses), the
/// groups by `or`. `None` when the query has no word.
pub fn render_query(query: &str, quote: impl Fn(&str) -> String, and: &str, or: &str) -> Option<String> {
    let groups: Vec<String> = query_groups(query)
        .iter()
        .map(|group| match group.as_slice() {
            [one] => quote(one),
            all => format!("({})", all.iter().map(|term| quote(term)).collect::<Vec<_>>().join(and)),
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
        let quote = |term: &str| format!("<{term}>");
        assert_eq!(
            render_query("rust 适者生存", quote, " & ", " | ").as_deref(),
            Some("<rust> | (<适者> & <者生> & <生存>)")
        );
        assert_eq!(render_query("!?", quote, " & ", " | "), None);
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
