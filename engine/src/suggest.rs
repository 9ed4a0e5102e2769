//! "Did you mean": the candidates closest to a misspelt word.

/// At most this many suggestions are offered for one unknown word, so a
/// message stays one line however many steps a workflow has.
pub const MAX_SUGGESTIONS: usize = 3;

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    closest(word, candidates, 1).into_iter().next()
}

/// Up to `n` candidates within typo distance of `word`, closest first (ties
/// in the order given).
pub fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    n: usize,
) -> Vec<&'a str> {
    let limit = (word.chars().count() / 2).clamp(2, 4);
    let mut scored: Vec<(usize, usize, &str)> = candidates
        .into_iter()
        .enumerate()
        .filter(|&(_, c)| c != word)
        // The length difference bounds the distance from below: most
        // candidates are dropped before the quadratic comparison.
        .filter(|&(_, c)| c.chars().count().abs_diff(word.chars().count()) <= limit)
        .map(|(i, c)| (strsim::levenshtein(word, c), i, c))
        .filter(|&(d, _, _)| d <= limit)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.2 == b.2);
    scored.into_iter().take(n).map(|(_, _, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_first_and_few() {
        assert_eq!(nearest("retries", ["retry", "repair", "id"]), Some("retry"));
        assert_eq!(nearest("zzzzzz", ["retry"]), None);
        let many: Vec<String> = (0..10_000).map(|i| format!("step-{i}")).collect();
        let got = closest("step-1x", many.iter().map(String::as_str), MAX_SUGGESTIONS);
        assert_eq!(got.len(), MAX_SUGGESTIONS);
        assert_eq!(got[0], "step-1");
    }
}
