//! A plain-text table: a header row, a rule, and left-aligned columns two spaces apart.
//!
//! Cells are made safe for a terminal first: control characters (which could move the cursor or
//! recolour the screen when a comment holds escape sequences) are shown escaped, and long cells
//! are cut with an ellipsis.

/// Longest cell shown, in characters.
const MAX_CELL_CHARS: usize = 48;

#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank and extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers)
            .chain(std::iter::once(&rule))
            .chain(&self.rows)
        {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One line, no control characters, at most [`MAX_CELL_CHARS`] characters.
pub fn cell(s: &str) -> String {
    let safe = one_line(s);
    if safe.chars().count() <= MAX_CELL_CHARS {
        return safe;
    }
    let mut cut: String = safe.chars().take(MAX_CELL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Escapes control characters (`\n`, `\u{1b}`, ...) so that text from the server prints as one
/// inert line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&["Name", "ID"]);
        t.row(vec!["prod".into(), "0123".into()]);
        t.row(vec!["a-much-longer-name".into(), "ab".into()]);
        assert_eq!(
            t.render(),
            "Name                ID\n\
             ------------------  ----\n\
             prod                0123\n\
             a-much-longer-name  ab\n"
        );
    }

    #[test]
    fn empty_tables_still_have_headers_and_short_rows_are_padded() {
        let t = Table::new(&["Name", "Comment"]);
        assert_eq!(t.render(), "Name  Comment\n----  -------\n");
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(vec!["x".into()]);
        assert_eq!(t.render(), "A  B  C\n-  -  -\nx\n");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(&["C", "D"]);
        t.row(vec!["héé".into(), "x".into()]);
        t.row(vec!["abc".into(), "y".into()]);
        let out = t.render();
        assert!(out.contains("héé  x\n"), "{out}");
        assert!(out.contains("abc  y\n"), "{out}");
    }

    #[test]
    fn cells_are_escaped_and_cut() {
        assert_eq!(cell("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(100);
        let c = cell(&long);
        assert_eq!(c.chars().count(), MAX_CELL_CHARS);
        assert!(c.ends_with('…'));
        assert_eq!(cell("short"), "short");
    }
}
