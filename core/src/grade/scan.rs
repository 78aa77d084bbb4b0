//! Linear scans over model output: brace groups, math spans, prose words and numbers.
//!
//! All positions are byte offsets at char boundaries; every scan is a single pass, so extraction
//! stays linear in the length of the output whatever it contains.

use alloc::vec::Vec;

use super::normalize::is_filler_word;

/// Byte offset just after the `}` that closes the `{` at `open`, or `None` when unbalanced.
/// `\{` and `\}` are escaped braces and do not count.
pub fn close_brace(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A math span: `start..end` is the whole span with delimiters, `inner` its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub inner: (usize, usize),
}

/// The `$..$`, `$$..$$`, `\(..\)` and `\[..\]` spans of `text`, in order (unclosed ones ignored).
pub fn math_spans(text: &str) -> Vec<Span> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    // Closers known to be absent from some point on: a later opener of the same kind cannot
    // close either, so unclosed openers cost one scan in all, not one each.
    let mut absent: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (open, close): (&[u8], &[u8]) = match (b, bytes.get(i + 1)) {
            (b'\\', Some(b'(')) => (b"\\(", b"\\)"),
            (b'\\', Some(b'[')) => (b"\\[", b"\\]"),
            (b'\\', _) => {
                i += 2; // an escaped character, e.g. `\$`
                continue;
            }
            (b'$', Some(b'$')) => (b"$$", b"$$"),
            (b'$', _) => (b"$", b"$"),
            _ => {
                i += 1;
                continue;
            }
        };
        let from = i + open.len();
        let found = if absent.contains(&close) {
            None
        } else {
            find_unescaped(bytes, from, close)
        };
        if found.is_none() && !absent.contains(&close) {
            absent.push(close);
        }
        match found {
            Some(at) => {
                if text.get(from..at).is_some_and(|s| !s.trim().is_empty()) {
                    spans.push(Span {
                        start: i,
                        end: at + close.len(),
                        inner: (from, at),
                    });
                }
                i = at + close.len();
            }
            None => i = from,
        }
    }
    spans
}

fn find_unescaped(bytes: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    let mut i = from;
    while i + pat.len() <= bytes.len() {
        if bytes.get(i) == Some(&b'\\') && pat != b"\\)" && pat != b"\\]" {
            i += 2;
            continue;
        }
        if bytes.get(i..i + pat.len()) == Some(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Number of prose words outside math: runs of two or more letters that are not a command, not
/// inside `\text{..}`-like arguments, and not units, percent words or connectors.
pub fn prose_words(text: &str) -> usize {
    let spans = math_spans(text);
    let mut count = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    let mut next_span = spans.iter().peekable();
    while let Some(&b) = bytes.get(i) {
        if let Some(span) = next_span.peek() {
            if i >= span.start {
                i = i.max(span.end);
                next_span.next();
                continue;
            }
        }
        if b == b'\\' {
            let name_len = bytes
                .get(i + 1..)
                .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_alphabetic()).count());
            i += 1 + name_len.max(1);
            // Skip the argument of `\text{..}`, `\begin{..}` and the like.
            if bytes.get(i) == Some(&b'{') && name_len > 0 {
                i = close_brace(text, i).unwrap_or(bytes.len());
            }
            continue;
        }
        if b.is_ascii_alphabetic() {
            let len = bytes
                .get(i..)
                .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_alphabetic()).count());
            let word = text.get(i..i + len).unwrap_or("");
            if len >= 2 && !is_filler_word(word) {
                count += 1;
            }
            i += len;
            continue;
        }
        i += 1;
    }
    count
}

/// The last number written in `text` (`-1,234.5`, `2/3`, `45%`): `(start, end)`. A digit glued to
/// letters before it (`AZYUK2A`, `x_2`) is not a number.
pub fn last_number(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let digits_from = |i: usize| {
        bytes
            .get(i..)
            .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count())
    };
    let mut last = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let prev = i.checked_sub(1).and_then(|p| bytes.get(p)).copied();
        let glued = prev.is_some_and(|p| p.is_ascii_alphabetic() || matches!(p, b'_' | b'^' | b'\\'));
        let mut start = i;
        if prev == Some(b'-')
            && !i
                .checked_sub(2)
                .and_then(|p| bytes.get(p))
                .is_some_and(u8::is_ascii_alphanumeric)
        {
            start -= 1;
        }
        let mut end = i + digits_from(i);
        // Digit groups (`1,234`, decimal comma `2,74`), a decimal part and a fraction.
        loop {
            let sep = bytes.get(end).copied();
            let more = digits_from(end + 1);
            match sep {
                Some(b',' | b'.' | b'/') if more > 0 => end += 1 + more,
                _ => break,
            }
        }
        if bytes.get(end) == Some(&b'%') {
            end += 1;
        }
        if !glued {
            last = Some((start, end));
        }
        i = end;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_words() {
        let t = r"Answer $ 9 $ and \( x \) cost \$5 $$y$$";
        let inner: Vec<&str> = math_spans(t).iter().map(|s| &t[s.inner.0..s.inner.1]).collect();
        assert_eq!(inner, [" 9 ", " x ", "y"]);
        assert_eq!(prose_words(r"$x$ is \text{big} 5 cm"), 1);
        assert_eq!(close_brace(r"{a\}{b}}c", 0), Some(8));
        assert_eq!(close_brace("{{", 0), None);
    }

    #[test]
    fn numbers() {
        let last = |t: &'static str| last_number(t).map(|(a, b)| &t[a..b]);
        assert_eq!(last("is 1,000.99m² ok"), Some("1,000.99"));
        assert_eq!(last("P = 2/3. <|im_start|>"), Some("2/3"));
        assert_eq!(last("AZYUK2A"), None);
        assert_eq!(last("x = -5 and 7%"), Some("7%"));
        assert_eq!(last("is -5."), Some("-5"));
    }
}
