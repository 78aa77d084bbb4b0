//! String normalisation of an extracted answer before parsing.
//!
//! Removes what does not change the value: math delimiters, `\left` / `\right`, spacing commands,
//! `\displaystyle`, degrees, units (after a value), `\$`, thousands separators, trailing
//! punctuation. Records a percent sign (`28\%` may be graded as 28 or 0.28). Turns the words `and`
//! / `or` between answers into commas, and keeps other `\text{..}` as one canonical `\text{word}`.

use alloc::string::String;

pub struct Normalized {
    pub text: String,
    pub percent: bool,
}

/// Commands whose doubled backslash (`\\frac`, an escaping slip) is repaired to a single one.
const KNOWN_COMMANDS: &[&str] = &[
    "frac", "dfrac", "tfrac", "cfrac", "sqrt", "left", "right", "pi", "le", "leq", "ge", "geq", "text", "boxed",
    "cdot", "times", "infty", "pm", "cup", "mathrm", "mbox", "neq", "approx",
];

/// Words dropped after a value: units and counted nouns that MATH answers append.
const UNITS: &[&str] = &[
    "unit",
    "units",
    "sq",
    "square",
    "cubic",
    "cm",
    "mm",
    "km",
    "m",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "kilometer",
    "kilometers",
    "inch",
    "inches",
    "ft",
    "feet",
    "foot",
    "yard",
    "yards",
    "mile",
    "miles",
    "mph",
    "hour",
    "hours",
    "hr",
    "hrs",
    "minute",
    "minutes",
    "min",
    "mins",
    "second",
    "seconds",
    "sec",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "euro",
    "euros",
    "yuan",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "ounce",
    "ounces",
    "oz",
    "gram",
    "grams",
    "kg",
    "kilogram",
    "kilograms",
    "liter",
    "liters",
    "litre",
    "litres",
    "ml",
    "gallon",
    "gallons",
    "degree",
    "degrees",
    "deg",
    "radian",
    "radians",
    "people",
    "students",
    "ways",
    "times",
    "points",
    "coins",
    "marbles",
    "books",
    "apples",
    "cookies",
    "boxes",
    "pages",
    "cups",
];

const PERCENT_WORDS: &[&str] = &["percent", "percents", "percentage", "pct"];

const TEXT_COMMANDS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textnormal",
    "textsf",
    "texttt",
    "mbox",
    "hbox",
    "mathrm",
    "mathit",
    "mathsf",
    "mathbf",
    "operatorname",
    "emph",
];

fn is_word(w: &str, list: &[&str]) -> bool {
    list.iter().any(|u| u.eq_ignore_ascii_case(w))
}

/// A word that may accompany an answer without making it prose: a unit, a percent word, or a
/// connector between answers.
pub fn is_filler_word(w: &str) -> bool {
    is_word(w, UNITS) || is_word(w, PERCENT_WORDS) || is_word(w, &["and", "or"])
}

/// Normalises an answer string (see the module documentation).
pub fn normalize(input: &str) -> Normalized {
    let mut percent = false;
    let s = repair(input);
    let s = rewrite_commands(&s, &mut percent, 0);
    let s = bare_words(&s, &mut percent);
    let s = thousands(&s);
    Normalized {
        text: tidy(&s),
        percent,
    }
}

/// The same number read with a decimal comma (`1,22` is 1.22 in much of the world), for answers
/// that are exactly two digit groups which cannot be thousands (those are already joined).
pub fn decimal_comma(text: &str) -> Option<String> {
    let (a, b) = text.split_once(',')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    (digits(a) && digits(b)).then(|| alloc::format!("{a}.{b}"))
}

/// Plain words (`\text{Evelyn}`, `odd`, `ellipse`): lower-cased with spaces and `\text` removed.
/// `None` when the answer has digits, math, or no word of three letters.
pub fn plain_words(text: &str) -> Option<String> {
    let inner = text.replace("\\text{", "").replace('}', "");
    let ok = inner
        .chars()
        .all(|c| c.is_alphabetic() || matches!(c, ' ' | '\'' | '-' | '.'));
    let long_word = inner
        .split(|c: char| !c.is_alphabetic())
        .any(|w| w.chars().count() >= 3);
    (ok && long_word).then(|| {
        inner
            .chars()
            .filter(|c| c.is_alphabetic())
            .flat_map(char::to_lowercase)
            .collect()
    })
}

/// `\\frac` → `\frac` for known commands; `14{,}916` and `14,\!916` → `14,916`; degree marks out.
fn repair(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\\\\") {
            let name_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            if KNOWN_COMMANDS.contains(&after.get(..name_len).unwrap_or("")) {
                rest = &rest[1..];
                continue;
            }
        }
        let skip = ["^\\circ", "^{\\circ}", "^{\\circ }", "{}^\\circ"]
            .iter()
            .find(|p| rest.starts_with(*p))
            .map(|p| p.len());
        if let Some(n) = skip {
            rest = &rest[n..];
            continue;
        }
        if let Some(n) = thousands_mark(rest) {
            out.truncate(out.trim_end().len());
            out.push(',');
            rest = &rest[n..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Length of a TeX thousands mark at the start of `s`: `{,}` (spaces allowed) or `,\!`.
fn thousands_mark(s: &str) -> Option<usize> {
    if let Some(after) = s.strip_prefix(",\\!") {
        return Some(s.len() - after.trim_start().len());
    }
    let after = s
        .strip_prefix('{')?
        .trim_start()
        .strip_prefix(',')?
        .trim_start()
        .strip_prefix('}')?;
    Some(s.len() - after.len())
}

/// Reads the `{..}` group at the start of `s`; returns its content and the rest after it.
fn group(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('{')?;
    let mut depth = 1usize;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&body[..i], &body[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// Skips `^2`, `^{2}`, `^3`, `^{3}` after a unit (`cm^2`).
fn skip_unit_power(s: &str) -> &str {
    let t = s.trim_start();
    ["^2", "^{2}", "^3", "^{3}"]
        .iter()
        .find_map(|p| t.strip_prefix(p))
        .unwrap_or(s)
}

/// Whether text after a `\text{..}` leaves it at the end of an answer item (so it is a unit).
fn ends_item(rest: &str) -> bool {
    let t = skip_unit_power(rest).trim_start();
    t.is_empty() || t.starts_with([',', ';', '.', ')', ']', '\\', '$'])
}

fn follows_value(out: &str) -> bool {
    out.trim_end()
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '}' | ')' | ']'))
}

/// What a `\text{content}` becomes, given the output so far and the input after it.
fn text_content(content: &str, out: &str, rest: &str, percent: &mut bool) -> String {
    let c = content.trim();
    let words = || c.split_whitespace();
    if c.is_empty() {
        return String::new();
    }
    if is_word(c, &["and", "or", ",", "and/or"]) {
        return String::from(",");
    }
    if words().all(|w| is_word(w, PERCENT_WORDS)) {
        *percent = true;
        return String::new();
    }
    let all_words = words().all(|w| w.chars().all(char::is_alphabetic));
    if all_words && follows_value(out) && ends_item(rest) {
        return String::new();
    }
    let has_word = c.split(|ch: char| !ch.is_alphabetic()).any(|w| w.chars().count() >= 2);
    if has_word {
        alloc::format!("\\text{{{c}}}")
    } else {
        String::from(c)
    }
}

/// One pass over commands and delimiters (see the module documentation).
fn rewrite_commands(s: &str, percent: &mut bool, depth: u32) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '$' | '°' => {}
            '%' => *percent = true,
            '\\' => {
                let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
                if name_len == 0 {
                    let Some(n) = rest.chars().next() else { break };
                    rest = &rest[n.len_utf8()..];
                    match n {
                        '%' => *percent = true,
                        '!' | ',' | ';' | ':' | ' ' | '>' | '$' | '(' | ')' | '[' | ']' => out.push(' '),
                        _ => {
                            out.push('\\');
                            out.push(n);
                        }
                    }
                    continue;
                }
                let name = &rest[..name_len];
                rest = &rest[name_len..];
                match name {
                    "left" | "right" | "bigl" | "bigr" | "Bigl" | "Bigr" | "big" | "Big" | "bigg" | "Bigg"
                    | "middle" => {
                        rest = rest.strip_prefix('.').unwrap_or(rest);
                    }
                    "displaystyle" | "textstyle" | "scriptstyle" | "limits" | "nolimits" | "circ" | "degree"
                    | "dollar" | "boxed" | "fbox" => {}
                    "quad" | "qquad" | "enspace" => out.push(' '),
                    "percent" => *percent = true,
                    "dfrac" | "tfrac" | "cfrac" => out.push_str("\\frac"),
                    "dbinom" | "tbinom" => out.push_str("\\binom"),
                    n if TEXT_COMMANDS.contains(&n) => {
                        let Some((content, after)) = group(rest.trim_start()) else {
                            continue;
                        };
                        rest = after;
                        // Text inside text (`\text{\textbf{cm}}`) is rewritten once more; deeper
                        // nesting is left as it is, so that hostile nesting stays linear.
                        let inner = if depth < 2 {
                            rewrite_commands(content, percent, depth + 1)
                        } else {
                            String::from(content)
                        };
                        let t = text_content(&inner, &out, rest, percent);
                        if t.is_empty() && !inner.trim().is_empty() {
                            rest = skip_unit_power(rest);
                        }
                        out.push_str(&t);
                    }
                    n => {
                        out.push('\\');
                        out.push_str(n);
                    }
                }
            }
            c if c.is_whitespace() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Handles bare words outside commands: `and` / `or` become commas, percent words set the flag,
/// unit words after a value disappear.
fn bare_words(s: &str, percent: &mut bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut after_unit = false;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            // A command name, and for `\text` / `\begin` / `\end` its argument, pass unchanged.
            let name_len = rest[1..].bytes().take_while(u8::is_ascii_alphabetic).count().max(1);
            let mut end = (1 + name_len).min(rest.len());
            while !rest.is_char_boundary(end) {
                end += 1;
            }
            let name = &rest[1..end];
            if matches!(name, "text" | "begin" | "end") {
                if let Some((_, after)) = group(&rest[end..]) {
                    end = rest.len() - after.len();
                }
            }
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            after_unit = false;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            after_unit &= c == ' ';
            continue;
        }
        let len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let word = &rest[..len];
        rest = &rest[len..];
        if len < 2 {
            out.push_str(word);
            after_unit = false;
        } else if is_word(word, &["and", "or"]) {
            out.push(',');
        } else if is_word(word, PERCENT_WORDS) {
            *percent = true;
        } else if is_word(word, UNITS) && (after_unit || follows_value(&out)) {
            rest = skip_unit_power(rest);
            after_unit = true;
        } else {
            out.push_str(word);
            after_unit = false;
        }
    }
    out
}

/// Removes thousands separators: `7,425,000` → `7425000`, `1 000` → `1000` (a lone number only).
fn thousands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let starts_number = b[i].is_ascii_digit() && (i == 0 || !matches!(b[i - 1], b'0'..=b'9' | b'.' | b','));
        if starts_number {
            let lead = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let mut j = i + lead;
            let mut groups = 0;
            while j + 3 < b.len()
                && b[j] == b','
                && b[j + 1..j + 4].iter().all(u8::is_ascii_digit)
                && !b.get(j + 4).is_some_and(u8::is_ascii_digit)
            {
                j += 4;
                groups += 1;
            }
            // `(12,102)` is a pair: digit groups right inside brackets are not thousands.
            let before = s[..i].trim_end().bytes().last();
            let after = s[j..].trim_start().bytes().next();
            let bracketed = matches!(before, Some(b'(' | b'[' | b'{')) || matches!(after, Some(b')' | b']' | b'}'));
            if groups > 0 && lead <= 3 && b[i] != b'0' && !bracketed {
                out.extend(s[i..j].chars().filter(|c| *c != ','));
                i = j;
                continue;
            }
        }
        let c = s[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    let spaced = out.trim();
    let groups: alloc::vec::Vec<&str> = spaced.split(' ').collect();
    let digits = |g: &str| !g.is_empty() && g.bytes().all(|c| c.is_ascii_digit());
    let space_thousands = groups.len() > 1
        && groups.first().is_some_and(|g| digits(g) && g.len() <= 3)
        && groups.iter().skip(1).all(|g| digits(g) && g.len() == 3);
    if space_thousands {
        return groups.concat();
    }
    out
}

/// Collapses whitespace and strips trailing punctuation and a leading `=`.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    let t = out.trim_end_matches(|c: char| matches!(c, '.' | ',' | ';' | ':') || c.is_whitespace());
    let t = t.trim_start_matches(|c: char| c == '=' || c == ':' || c.is_whitespace());
    String::from(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s).text
    }

    #[test]
    fn cleanup() {
        assert_eq!(n(r"$\left( \dfrac{1}{2} \right)$."), r"( \frac{1}{2} )");
        assert_eq!(n(r"90^\circ"), "90");
        assert_eq!(n(r"\$32,\!348"), "32348");
        assert_eq!(n("14{,}916"), "14916");
        assert_eq!(n("7,425,000"), "7425000");
        assert_eq!(n("1 000"), "1000");
        assert_eq!(n("0,111"), "0,111");
        assert_eq!(n(r"864 \mbox{ inches}^2"), "864");
        assert_eq!(n(r"15\mbox{ cm}^2"), "15");
        assert_eq!(n(r"\frac{1}{3} \text{meters}"), r"\frac{1}{3}");
        assert_eq!(n("125 miles"), "125");
        assert_eq!(n(r"6 \text{ and } 8"), "6 , 8");
        assert_eq!(n(r"\text{(C)}"), "(C)");
        assert_eq!(n(r"\text{Evelyn}"), r"\text{Evelyn}");
        assert_eq!(n(r"\\frac{1}{2}"), r"\frac{1}{2}");
        assert!(normalize(r"28\%").percent);
        assert!(normalize("28 percent").percent);
    }

    #[test]
    fn words_and_commas() {
        assert_eq!(plain_words(r"\text{Evelyn}").as_deref(), Some("evelyn"));
        assert_eq!(plain_words("odd"), Some("odd".into()));
        assert_eq!(plain_words("x"), None);
        assert_eq!(plain_words("12"), None);
        assert_eq!(decimal_comma("1,22").as_deref(), Some("1.22"));
        assert_eq!(decimal_comma("-2,1"), None);
    }
}
