//! The rules of metric and label names, as the runtime's `descriptor`
//! and `encode::names` state them, repeated here to report a bad name at
//! its span; the runtime's `const` checks stay the backstop.

/// A valid name: non-empty, no control character.
pub(crate) fn is_valid(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

fn legacy_char(c: char, i: usize, colon: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (i > 0 && c.is_ascii_digit())
}

fn is_legacy(name: &str, colon: bool) -> bool {
    !name.is_empty() && name.char_indices().all(|(i, c)| legacy_char(c, i, colon))
}

/// A name as the scrapers that asked for each escaping scheme read it:
/// `underscores`, `dots`, `values`. Legacy names are never escaped.
pub(crate) fn escaped(name: &str, colon: bool) -> [String; 3] {
    if is_legacy(name, colon) {
        return [name.to_owned(), name.to_owned(), name.to_owned()];
    }
    let (mut underscores, mut dots, mut values) = (String::new(), String::new(), String::from("U__"));
    for (i, c) in name.char_indices() {
        let legacy = legacy_char(c, i, colon);
        underscores.push(if legacy { c } else { '_' });
        match c {
            '_' => dots.push_str("__"),
            '.' => dots.push_str("_dot_"),
            c if legacy => dots.push(c),
            _ => dots.push_str("__"),
        }
        match c {
            '_' => values.push_str("__"),
            c if legacy => values.push(c),
            c => values.push_str(&format!("_{:x}_", c as u32)),
        }
    }
    [underscores, dots, values]
}

/// Whether a label name is reserved for Prometheus (`__` prefix), as
/// written or as any scraper reads it.
pub(crate) fn is_reserved_label(name: &str) -> bool {
    name.starts_with("__") || escaped(name, false).iter().any(|e| e.starts_with("__"))
}

/// Whether two label names are one to some scraper.
pub(crate) fn labels_clash(a: &str, b: &str) -> bool {
    a == b || escaped(a, false).iter().zip(escaped(b, false).iter()).any(|(x, y)| x == y)
}

/// A metric name as a scraper without UTF-8 support reads it.
pub(crate) fn legacy_form(name: &str) -> String {
    let [underscores, _, _] = escaped(name, true);
    underscores
}
