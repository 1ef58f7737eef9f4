//! Plain-text tables for the terminal: left-aligned columns, two spaces apart.

/// Renders `rows` under `headers`, each column as wide as its widest cell.
#[must_use]
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(cell.chars().count()),
                None => widths.push(cell.chars().count()),
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    std::iter::once(&header)
        .chain(std::iter::once(&rule))
        .chain(rows)
        .map(|row| line(row, &widths))
        .collect()
}

fn line(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, width)| format!("{cell:<width$}"))
        .collect();
    let mut line = padded.join("  ").trim_end().to_owned();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["identity".into(), "127.0.0.1:50051".into(), "41".into()],
            vec![
                "notifications".into(),
                "127.0.0.1:50057".into(),
                "4242".into(),
            ],
        ];
        let text = render(&["service", "gRPC", "pid"], &rows);
        let expected = "\
service        gRPC             pid
-------------  ---------------  ----
identity       127.0.0.1:50051  41
notifications  127.0.0.1:50057  4242
";
        assert_eq!(text, expected);
    }

    #[test]
    fn no_rows_is_just_the_header() {
        assert_eq!(render(&["a", "bb"], &[]), "a  bb\n-  --\n");
    }
}
