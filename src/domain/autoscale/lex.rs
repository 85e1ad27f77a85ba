//! The lexer: formula text to tokens with their positions.

use super::{ErrorKind, FormulaError, Pos};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Semi,
    Assign,
    LParen,
    RParen,
    Comma,
    Dot,
    Question,
    Colon,
    Plus,
    Minus,
    Star,
    Slash,
    Bang,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Eof,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ident(s) => format!("name {s}"),
            Tok::Eof => "the end of the formula".into(),
            other => format!("'{}'", other.symbol()),
        }
    }
    pub(super) fn symbol(&self) -> &'static str {
        match self {
            Tok::Semi => ";",
            Tok::Assign => "=",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Question => "?",
            Tok::Colon => ":",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Bang => "!",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            _ => "",
        }
    }
}

pub(super) fn lex(text: &str) -> Result<Vec<(Tok, Pos)>, FormulaError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let next = chars.get(i + 1).copied();
        let take = |n: usize, i: &mut usize, col: &mut u32| {
            *i += n;
            *col += n as u32;
        };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            take(1, &mut i, &mut col);
            continue;
        }
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && next.is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            i = number_end(&chars, i);
            let s: String = chars[start..i].iter().collect();
            col += (i - start) as u32;
            let n: f64 = s.parse().map_err(|_| {
                FormulaError::new(ErrorKind::Syntax, pos, format!("bad number {s}"))
            })?;
            out.push((Tok::Num(n), pos));
            continue;
        }
        if c == '"' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && chars[j] != '"' && chars[j] != '\n' {
                j += 1;
            }
            if j >= chars.len() || chars[j] != '"' {
                return Err(FormulaError::new(
                    ErrorKind::Syntax,
                    pos,
                    "string is not closed: a '\"' is missing before the end of the line",
                ));
            }
            let s: String = chars[start..j].iter().collect();
            col += (j + 1 - i) as u32;
            i = j + 1;
            out.push((Tok::Str(s), pos));
            continue;
        }
        if c == '$' || c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            col += (i - start) as u32;
            if s == "$" {
                return Err(FormulaError::new(
                    ErrorKind::Syntax,
                    pos,
                    "'$' must be followed by a variable name",
                ));
            }
            out.push((Tok::Ident(s), pos));
            continue;
        }
        let (tok, n) = operator(c, next, pos)?;
        take(n, &mut i, &mut col);
        out.push((tok, pos));
    }
    out.push((Tok::Eof, Pos { line, col }));
    Ok(out)
}

/// Where a number that starts at `i` ends: digits, an optional fraction,
/// an optional exponent.
fn number_end(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_ascii_digit() {
        i += 1;
    }
    if i < chars.len() && chars[i] == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        let mut j = i + 1;
        if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
            j += 1;
        }
        if j < chars.len() && chars[j].is_ascii_digit() {
            i = j;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// The operator or punctuation at `c` (with the character after it), and
/// how many characters it takes.
fn operator(c: char, next: Option<char>, pos: Pos) -> Result<(Tok, usize), FormulaError> {
    let two = |a: char, b: char| c == a && next == Some(b);
    let (tok, n) = if two('<', '=') {
        (Tok::Le, 2)
    } else if two('>', '=') {
        (Tok::Ge, 2)
    } else if two('=', '=') {
        (Tok::EqEq, 2)
    } else if two('!', '=') {
        (Tok::Ne, 2)
    } else if two('&', '&') {
        (Tok::AndAnd, 2)
    } else if two('|', '|') {
        (Tok::OrOr, 2)
    } else {
        let t = match c {
            ';' => Tok::Semi,
            '=' => Tok::Assign,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '.' => Tok::Dot,
            '?' => Tok::Question,
            ':' => Tok::Colon,
            '+' => Tok::Plus,
            '-' => Tok::Minus,
            '*' => Tok::Star,
            '/' => Tok::Slash,
            '!' => Tok::Bang,
            '<' => Tok::Lt,
            '>' => Tok::Gt,
            '&' => {
                return Err(FormulaError::new(
                    ErrorKind::Syntax,
                    pos,
                    "'&' alone is not an operator; 'and' is '&&'",
                ))
            }
            '|' => {
                return Err(FormulaError::new(
                    ErrorKind::Syntax,
                    pos,
                    "'|' alone is not an operator; 'or' is '||'",
                ))
            }
            other => {
                return Err(FormulaError::new(
                    ErrorKind::Syntax,
                    pos,
                    format!("unexpected character {other:?}"),
                ))
            }
        };
        (t, 1)
    };
    Ok((tok, n))
}
