//! Log lines fitted to the terminal while progress bars are drawn: a row the terminal
//! wraps on its own is one the bars' redraw does not account for, and at 80 columns a
//! provider's error made every log line two or three ragged rows. Wrapping here, at word
//! boundaries, keeps every word (an error must not lose its end) and marks continuation
//! rows by an indent.

/// Indent of a wrapped line's continuation rows.
const INDENT: &str = "    ";

/// Below this width wrapping would leave no room for text: lines are left alone.
const MIN_COLUMNS: usize = 20;

/// `text` with every line broken into rows of at most `columns - 1` cells (one spare: a
/// row that fills the last column makes some terminals wrap it). Colour codes take no
/// cells and are kept.
pub(super) fn to_width(text: &str, columns: usize) -> String {
    if columns < MIN_COLUMNS {
        return text.to_owned();
    }
    let options = textwrap::Options::new(columns - 1)
        .subsequent_indent(INDENT)
        .break_words(true);
    let (body, end) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (text, ""),
    };
    let mut fitted = textwrap::wrap(body, options).join("\n");
    fitted.push_str(end);
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;
    use textwrap::core::display_width;

    fn widths(text: &str) -> Vec<usize> {
        text.lines().map(display_width).collect()
    }

    #[test]
    fn a_long_line_becomes_indented_rows_within_the_width_keeping_every_word() {
        let words: Vec<String> = (0..60).map(|i| format!("word{i}")).collect();
        let line = format!("WARN provider note: {}\n", words.join(" "));
        let fitted = to_width(&line, 80);
        assert!(widths(&fitted).iter().all(|w| *w <= 79), "{fitted}");
        assert!(fitted.lines().count() >= 5, "{fitted}");
        assert!(fitted.lines().skip(1).all(|row| row.starts_with(INDENT)));
        let rejoined: Vec<&str> = fitted.split_whitespace().collect();
        let original: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(rejoined, original, "no word lost or cut");
        assert!(fitted.ends_with('\n'));
    }

    #[test]
    fn a_word_longer_than_a_row_is_broken() {
        let fitted = to_width(&format!("id={}", "x".repeat(300)), 80);
        assert!(widths(&fitted).iter().all(|w| *w <= 79), "{fitted}");
        assert_eq!(fitted.matches('x').count(), 300);
    }

    #[test]
    fn colour_codes_take_no_room_and_survive() {
        let line = format!("\x1b[33m WARN\x1b[0m {}\n", "word ".repeat(18));
        let fitted = to_width(&line, 80);
        assert_eq!(fitted.lines().count(), 2, "{fitted:?}");
        assert!(fitted.starts_with("\x1b[33m WARN\x1b[0m "), "{fitted:?}");
        assert!(widths(&fitted).iter().all(|w| *w <= 79), "{fitted:?}");
    }

    #[test]
    fn short_lines_and_tiny_terminals_are_left_alone() {
        assert_eq!(to_width("INFO done\n", 80), "INFO done\n");
        let long = "z ".repeat(100);
        assert_eq!(to_width(&long, 10), long);
    }

    #[test]
    fn wide_characters_count_two_cells() {
        let fitted = to_width(&"界".repeat(60), 80);
        assert!(widths(&fitted).iter().all(|w| *w <= 79), "{fitted}");
        assert_eq!(fitted.lines().count(), 2);
    }
}
