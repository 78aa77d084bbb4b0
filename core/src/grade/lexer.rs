//! Tokens of a normalised LaTeX answer.
//!
//! Digits are single tokens so that `\frac34` can take one digit per argument, as TeX does; the
//! parser reassembles numbers. Whitespace carries no meaning in math mode and is dropped.

use alloc::{string::String, vec::Vec};

/// Inputs with more tokens than this are compared as strings only (bounds parse and eval work).
pub const MAX_TOKENS: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Approx,
    In,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Digit(u8),
    Dot,
    Letter(char),
    /// The content of `\text{..}` kept as one word.
    Word(String),
    /// `\name` without the backslash.
    Cmd(String),
    Begin(String),
    End(String),
    Rel(Rel),
    Plus,
    Minus,
    Star,
    Slash,
    Caret,
    Underscore,
    Bang,
    Prime,
    LParen,
    RParen,
    LBrack,
    RBrack,
    LBrace,
    RBrace,
    LSet,
    RSet,
    Comma,
    Semi,
    Colon,
    Bar,
    Amp,
    RowSep,
    Other(char),
}

/// Reads the content of the brace group that starts at `chars[*i]` (which must be `{`), leaving
/// `*i` after the closing brace. Unbalanced input takes the rest.
fn brace_content(chars: &[char], i: &mut usize) -> String {
    let mut depth = 0usize;
    let start = *i + 1;
    while let Some(&c) = chars.get(*i) {
        *i += 1;
        match c {
            '\\' => *i += 1,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return chars.get(start..*i - 1).unwrap_or_default().iter().collect();
                }
            }
            _ => {}
        }
    }
    chars.get(start..).unwrap_or_default().iter().collect()
}

fn command(name: &str) -> Option<Tok> {
    let rel = match name {
        "le" | "leq" | "leqslant" => Rel::Le,
        "ge" | "geq" | "geqslant" => Rel::Ge,
        "lt" => Rel::Lt,
        "gt" => Rel::Gt,
        "ne" | "neq" => Rel::Ne,
        "approx" | "simeq" | "sim" => Rel::Approx,
        "in" => Rel::In,
        "equiv" => Rel::Eq,
        // Spacing that survived normalisation.
        "quad" | "qquad" => return None,
        _ => return Some(Tok::Cmd(name.into())),
    };
    Some(Tok::Rel(rel))
}

/// Tokens of `s`, or `None` when there are more than [`MAX_TOKENS`].
pub fn lex(s: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if out.len() > MAX_TOKENS {
            return None;
        }
        i += 1;
        let next = chars.get(i).copied();
        let tok = match c {
            '0'..='9' => Tok::Digit(c as u8 - b'0'),
            '.' => Tok::Dot,
            '+' => Tok::Plus,
            '-' | '−' | '–' => Tok::Minus,
            '*' if next == Some('*') => {
                i += 1;
                Tok::Caret
            }
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '^' => Tok::Caret,
            '_' => Tok::Underscore,
            '!' if next == Some('=') => {
                i += 1;
                Tok::Rel(Rel::Ne)
            }
            '!' => Tok::Bang,
            '\'' => Tok::Prime,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBrack,
            ']' => Tok::RBrack,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            ',' => Tok::Comma,
            ';' => Tok::Semi,
            ':' => Tok::Colon,
            '|' => Tok::Bar,
            '&' => Tok::Amp,
            '=' => Tok::Rel(Rel::Eq),
            '<' | '>' => {
                let strict = next != Some('=');
                if !strict {
                    i += 1;
                }
                Tok::Rel(match (c, strict) {
                    ('<', true) => Rel::Lt,
                    ('<', false) => Rel::Le,
                    (_, true) => Rel::Gt,
                    (_, false) => Rel::Ge,
                })
            }
            '≤' => Tok::Rel(Rel::Le),
            '≥' => Tok::Rel(Rel::Ge),
            '≠' => Tok::Rel(Rel::Ne),
            '≈' => Tok::Rel(Rel::Approx),
            '×' => Tok::Cmd("times".into()),
            '·' | '⋅' => Tok::Cmd("cdot".into()),
            '÷' => Tok::Cmd("div".into()),
            'π' => Tok::Cmd("pi".into()),
            '∞' => Tok::Cmd("infty".into()),
            '√' => Tok::Cmd("sqrt".into()),
            '∪' => Tok::Cmd("cup".into()),
            '±' => Tok::Cmd("pm".into()),
            '²' | '³' => {
                out.push(Tok::Caret);
                Tok::Digit(if c == '²' { 2 } else { 3 })
            }
            '\\' => {
                let Some(n) = next else { break };
                if !n.is_ascii_alphabetic() {
                    i += 1;
                    match n {
                        '{' => Tok::LSet,
                        '}' => Tok::RSet,
                        '\\' => Tok::RowSep,
                        '|' => Tok::Bar,
                        _ => continue, // spacing (`\,` `\!` ...) and escaped signs
                    }
                } else {
                    let start = i;
                    while chars.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
                        i += 1;
                    }
                    let name: String = chars.get(start..i).unwrap_or_default().iter().collect();
                    match name.as_str() {
                        "text" | "begin" | "end" if chars.get(i) == Some(&'{') => {
                            let arg = brace_content(&chars, &mut i);
                            match name.as_str() {
                                "text" => Tok::Word(String::from(arg.trim())),
                                "begin" => Tok::Begin(arg),
                                _ => Tok::End(arg),
                            }
                        }
                        _ => {
                            // `\quadx` (spacing glued to a letter) is spacing then `x`.
                            let glued = ["qquad", "quad"].iter().find_map(|s| name.strip_prefix(s));
                            match glued {
                                Some(rest) if !rest.is_empty() => {
                                    out.extend(rest.chars().map(Tok::Letter));
                                    continue;
                                }
                                _ => match command(&name) {
                                    Some(t) => t,
                                    None => continue,
                                },
                            }
                        }
                    }
                }
            }
            c if c.is_whitespace() || c == '~' => continue,
            c if c.is_alphabetic() => Tok::Letter(c),
            c => Tok::Other(c),
        };
        out.push(tok);
    }
    (out.len() <= MAX_TOKENS).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = lex(r"\frac34 \le x_1, \text{ cm } \{ \\").unwrap();
        assert_eq!(t[0], Tok::Cmd("frac".into()));
        assert_eq!(t[1], Tok::Digit(3));
        assert_eq!(t[3], Tok::Rel(Rel::Le));
        assert_eq!(t[8], Tok::Word("cm".into()));
        assert_eq!(&t[9..], &[Tok::LSet, Tok::RowSep]);
        assert_eq!(lex(r"\quadx").unwrap(), [Tok::Letter('x')]);
        assert!(lex(&"1".repeat(MAX_TOKENS + 5)).is_none());
    }
}
