//! A plain-text table: a header row, a rule, and left-aligned columns two spaces apart.
//!
//! Cells are made safe for a terminal first: control characters (which could move the cursor or
//! recolour the screen when a comment holds escape sequences) and the characters a terminal
//! does not show as themselves (a bidi override that reverses what follows, zero-width
//! characters, ...) are shown escaped. By default a
//! table fits [`WIDTH`] columns: columns marked wide-only are left out, long cells are cut with
//! an ellipsis, and flexible columns (names, comments) are narrowed if it is still too wide.
//! `--wide` shows every column and every cell whole.

/// Longest cell shown by default, in characters.
const MAX_CELL_CHARS: usize = 48;

/// The width a default table fits in.
pub const WIDTH: usize = 100;

/// A flexible column is narrowed to no less than this (or its header, if longer).
const MIN_FLEXIBLE_CHARS: usize = 8;

#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    /// Escaped, not cut.
    rows: Vec<Vec<String>>,
    wide_only: Vec<bool>,
    flexible: Vec<bool>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
            wide_only: vec![false; headers.len()],
            flexible: vec![false; headers.len()],
        }
    }

    /// Columns shown only by `--wide`.
    pub fn wide_only(mut self, headers: &[&str]) -> Table {
        for (i, h) in self.headers.iter().enumerate() {
            self.wide_only[i] |= headers.contains(h);
        }
        self
    }

    /// Columns that may be narrowed (their cells cut) to fit [`WIDTH`].
    pub fn flexible(mut self, headers: &[&str]) -> Table {
        for (i, h) in self.headers.iter().enumerate() {
            self.flexible[i] |= headers.contains(h);
        }
        self
    }

    /// Adds a row; missing cells are blank and extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.iter().map(|c| one_line(c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table: every column and cell whole if `wide`, else within [`WIDTH`] where the
    /// flexible columns allow.
    pub fn render(&self, wide: bool) -> String {
        let shown: Vec<usize> = (0..self.headers.len())
            .filter(|&i| wide || !self.wide_only[i])
            .collect();
        let count = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = shown
            .iter()
            .map(|&i| {
                let cells = self.rows.iter().map(|r| {
                    let n = count(&r[i]);
                    if wide { n } else { n.min(MAX_CELL_CHARS) }
                });
                cells.fold(count(self.headers[i]), usize::max)
            })
            .collect();
        if !wide {
            let gaps = 2 * shown.len().saturating_sub(1);
            while widths.iter().sum::<usize>() + gaps > WIDTH {
                // Narrow the widest flexible column that can still give.
                let Some(k) = (0..shown.len())
                    .filter(|&k| {
                        let i = shown[k];
                        self.flexible[i]
                            && widths[k] > MIN_FLEXIBLE_CHARS.max(count(self.headers[i]))
                    })
                    .max_by_key(|&k| (widths[k], std::cmp::Reverse(k)))
                else {
                    break;
                };
                widths[k] -= 1;
            }
        }
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let headers: Vec<String> = shown.iter().map(|&i| self.headers[i].to_owned()).collect();
        let body = self
            .rows
            .iter()
            .map(|r| shown.iter().map(|&i| r[i].clone()).collect::<Vec<String>>());
        let mut out = String::new();
        for row in [headers, rule].into_iter().chain(body) {
            let mut line = String::new();
            for (k, (c, w)) in row.iter().zip(&widths).enumerate() {
                if k > 0 {
                    line.push_str("  ");
                }
                let c = cut(c, *w);
                line.push_str(&c);
                line.extend(std::iter::repeat_n(' ', w - count(&c)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `s` in at most `width` characters, cut with an ellipsis.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Escapes control characters (`\n`, `\u{1b}`, ...) and the other characters a terminal does not
/// show as themselves (bidi overrides and isolates, zero-width characters, line and paragraph
/// separators, soft hyphens, ...), so that text from the server prints as one inert line that
/// reads as what it is. Ordinary printable Unicode is kept.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || (!c.is_ascii() && !is_printable(c)) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` is printable by Rust's table (the one `{:?}` uses): not a format character,
/// separator, private-use, surrogate or unassigned code point. Asked of `c` after another
/// character, where `escape_debug` escapes only what is not printable (first in a string, a
/// combining mark would be escaped too).
fn is_printable(c: char) -> bool {
    let mut buf = [0u8; 5];
    buf[0] = b'a';
    let len = 1 + c.encode_utf8(&mut buf[1..]).len();
    let pair = std::str::from_utf8(&buf[..len]).unwrap_or_default();
    pair.escape_debug().nth(1) != Some('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&["Name", "ID"]);
        t.row(vec!["prod".into(), "0123".into()]);
        t.row(vec!["a-much-longer-name".into(), "ab".into()]);
        let expected = "Name                ID\n\
                        ------------------  ----\n\
                        prod                0123\n\
                        a-much-longer-name  ab\n";
        assert_eq!(t.render(false), expected);
        assert_eq!(t.render(true), expected);
    }

    #[test]
    fn empty_tables_still_have_headers_and_short_rows_are_padded() {
        let t = Table::new(&["Name", "Comment"]);
        assert_eq!(t.render(false), "Name  Comment\n----  -------\n");
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(vec!["x".into()]);
        assert_eq!(t.render(false), "A  B  C\n-  -  -\nx\n");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["C", "D"]);
        t.row(vec!["héé".into(), "x".into()]);
        t.row(vec!["abc".into(), "y".into()]);
        let out = t.render(false);
        assert!(out.contains("héé  x\n"), "{out}");
        assert!(out.contains("abc  y\n"), "{out}");
    }

    #[test]
    fn cells_are_escaped_and_cut_unless_wide() {
        let mut t = Table::new(&["C"]);
        t.row(vec!["a\nb\u{1b}[31m".into()]);
        t.row(vec!["x".repeat(100)]);
        let out = t.render(false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "a\\nb\\u{1b}[31m");
        assert_eq!(lines[3].chars().count(), MAX_CELL_CHARS);
        assert!(lines[3].ends_with('…'));
        assert_eq!(
            t.render(true).lines().nth(3),
            Some("x".repeat(100).as_str())
        );
    }

    #[test]
    fn characters_a_terminal_would_not_show_as_themselves_are_escaped() {
        // Bidi overrides and isolates, zero-width characters, BOM, line and paragraph
        // separators, soft hyphen, no-break space, a tag character, C1 controls.
        for (c, shown) in [
            ('\u{202e}', "\\u{202e}"),
            ('\u{202a}', "\\u{202a}"),
            ('\u{2066}', "\\u{2066}"),
            ('\u{2069}', "\\u{2069}"),
            ('\u{200b}', "\\u{200b}"),
            ('\u{200f}', "\\u{200f}"),
            ('\u{feff}', "\\u{feff}"),
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
            ('\u{ad}', "\\u{ad}"),
            ('\u{a0}', "\\u{a0}"),
            ('\u{e0041}', "\\u{e0041}"),
            ('\u{9b}', "\\u{9b}"),
        ] {
            assert_eq!(one_line(&format!("a{c}b")), format!("a{shown}b"), "{c:?}");
            assert_eq!(one_line(&format!("{c}")), shown, "{c:?}");
        }
        // Printable Unicode is kept, combining marks included, first or not.
        for kept in [
            "naïve ✓ 日本語 🔑",
            "e\u{301}",
            "\u{301}e",
            "Ωmega",
            "\"quoted\" 'single' back\\slash",
        ] {
            assert_eq!(one_line(kept), kept);
        }
        let mut t = Table::new(&["Comment"]);
        t.row(vec!["evil\u{202e}txt.exe".into()]);
        assert_eq!(t.render(false).lines().nth(2), Some("evil\\u{202e}txt.exe"));
    }

    #[test]
    fn default_tables_fit_the_width_by_narrowing_flexible_columns() {
        let mut t = Table::new(&["Name", "ID", "Comment", "Extra"])
            .flexible(&["Name", "Comment"])
            .wide_only(&["Extra"]);
        t.row(vec![
            "n".repeat(40),
            "i".repeat(32),
            "c".repeat(45),
            "e".repeat(10),
        ]);
        let out = t.render(false);
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["Name", "ID", "Comment"]);
        let row = out.lines().nth(2).unwrap();
        // The ID is whole; the two flexible columns gave up width, the wider one first.
        assert!(row.contains(&"i".repeat(32)), "{row}");
        assert_eq!(row.chars().count(), WIDTH);
        assert!(row.contains("…"), "{row}");
        // --wide: every column, every cell whole.
        let wide = t.render(true);
        assert!(wide.lines().next().unwrap().ends_with("Extra"), "{wide}");
        let row = wide.lines().nth(2).unwrap();
        for cell in ["n".repeat(40), "c".repeat(45), "e".repeat(10)] {
            assert!(row.contains(&cell), "{row}");
        }

        // Without flexible columns a table is left as wide as it is.
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(vec!["a".repeat(40), "b".repeat(40), "c".repeat(40)]);
        assert_eq!(t.render(false).lines().nth(2).unwrap().chars().count(), 124);
    }
}
