//! Erlang term text: the literal terms written in `sys.config` files and in
//! `-App Key Value` arguments.
//!
//! This module owns reading that text into [`ErlTerm`] values, with the line
//! and column of every term so that callers can point at the file when a
//! value is wrong, and writing values back in Erlang syntax
//! ([`ErlTerm`]'s `Display`). It reads what a literal term can be: atoms
//! (bare and quoted), integers (`-1`, `16#ff`, `$a`, `1_000`), floats,
//! strings (adjacent ones joined, as Erlang does), binaries (`<<"a">>`,
//! `<<"é"/utf8>>`, `<<1,2>>`), tuples, lists (`[H|T]` when `T` is a proper
//! list), maps and `%` comments. Pids, funs, records, operators and sized
//! binary segments are not literal config values and are refused with a
//! message. What a term means is for [`super::sys_config`] to decide.

use std::fmt;

/// An Erlang term as written in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub enum ErlTerm {
    /// `flack`, `'flack1@host'`, `true`.
    Atom(String),
    /// `8080`, `-1`, `16#ff`, `$a`.
    Int(i64),
    /// `2.5`, `1.0e-3`.
    Float(f64),
    /// `"text"`. Erlang sees a list of character codes; kept as text here.
    String(String),
    /// `<<"bytes">>`, `<<1,2,3>>`.
    Binary(Vec<u8>),
    /// `{a, b}`.
    Tuple(Vec<ErlTerm>),
    /// `[a, b]`.
    List(Vec<ErlTerm>),
    /// `#{k => v}`, pairs in the order written.
    Map(Vec<(ErlTerm, ErlTerm)>),
}

impl ErlTerm {
    /// The atom's name, if this is an atom.
    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Self::Atom(name) => Some(name),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// The elements, if this is a list.
    pub fn as_list(&self) -> Option<&[ErlTerm]> {
        match self {
            Self::List(items) => Some(items),
            _ => None,
        }
    }

    /// The elements, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[ErlTerm]> {
        match self {
            Self::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// What kind of term this is, for messages: "an atom", "a list", ...
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Atom(_) => "an atom",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::String(_) => "a string",
            Self::Binary(_) => "a binary",
            Self::Tuple(_) => "a tuple",
            Self::List(_) => "a list",
            Self::Map(_) => "a map",
        }
    }
}

/// A line and column in a text, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

/// Where a term and each of its parts were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spans {
    /// Where the term starts.
    pub pos: Pos,
    children: Vec<Spans>,
}

impl Spans {
    fn leaf(pos: Pos) -> Self {
        Self {
            pos,
            children: Vec::new(),
        }
    }

    /// The spans of element `index` of a tuple or list (of a map: the key of
    /// pair `i` is `2 * i`, its value `2 * i + 1`). Where an element has no
    /// span of its own (a character of a string spliced into a list), the
    /// span of this term.
    pub fn child(&self, index: usize) -> &Spans {
        self.children.get(index).unwrap_or(self)
    }
}

/// A term and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The term.
    pub term: ErlTerm,
    /// Where it and its parts were written.
    pub spans: Spans,
}

/// Text that is not a term: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file (or other source) the text came from.
    pub origin: String,
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.pos.line, self.pos.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a sequence of terms each ended by a full stop, as
/// `file:consult/1` reads a file (a `sys.config` holds one). `origin` names
/// the text in error messages.
pub fn parse_terms(origin: &str, text: &str) -> Result<Vec<Located>, ParseError> {
    let mut parser = Parser::new(origin, text);
    let mut terms = Vec::new();
    loop {
        parser.skip_blank();
        if parser.peek().is_none() {
            return Ok(terms);
        }
        let term = parser.term()?;
        parser.full_stop()?;
        terms.push(term);
    }
}

/// Parses one term, its full stop optional: a value given on a command line
/// (`-flack port 8081`) or in a `vm.args`.
pub fn parse_value(origin: &str, text: &str) -> Result<Located, ParseError> {
    let mut parser = Parser::new(origin, text);
    let term = parser.term()?;
    parser.skip_blank();
    if parser.peek() == Some('.') {
        parser.full_stop()?;
        parser.skip_blank();
    }
    if parser.peek().is_some() {
        return Err(parser.error(format!("unexpected {} after the term", parser.found())));
    }
    Ok(term)
}

/// Deepest nesting of tuples, lists and maps read; deeper input is refused
/// rather than risking the stack.
const MAX_DEPTH: usize = 128;

/// Longest atom Erlang accepts, in characters.
const MAX_ATOM_CHARS: usize = 255;

/// Words Erlang reserves; they are atoms only when quoted.
const RESERVED: &[&str] = &[
    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr", "bxor", "case",
    "catch", "cond", "div", "end", "fun", "if", "let", "not", "of", "or", "orelse", "receive",
    "rem", "try", "when", "xor",
];

struct Parser<'a> {
    origin: &'a str,
    text: &'a str,
    offset: usize,
    line: usize,
    column: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(origin: &'a str, text: &'a str) -> Self {
        Self {
            origin,
            text,
            offset: 0,
            line: 1,
            column: 1,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.offset..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.text[self.offset..].chars().nth(1)
    }

    fn starts_with(&self, prefix: &str) -> bool {
        self.text[self.offset..].starts_with(prefix)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn error(&self, message: String) -> ParseError {
        self.error_at(self.pos(), message)
    }

    fn error_at(&self, pos: Pos, message: String) -> ParseError {
        ParseError {
            origin: self.origin.to_owned(),
            pos,
            message,
        }
    }

    /// What is at the current position, for messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".to_owned(),
            Some(c) => format!("{c:?}"),
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        self.error(format!("expected {what}, found {}", self.found()))
    }

    /// Skips whitespace and `%` comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == '%' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    /// The `.` that ends a term: followed by whitespace, a comment or the end.
    fn full_stop(&mut self) -> Result<(), ParseError> {
        self.skip_blank();
        if self.peek() != Some('.') {
            return Err(self.expected("'.' after the term"));
        }
        self.bump();
        match self.peek() {
            None | Some('%') => Ok(()),
            Some(c) if c.is_whitespace() => Ok(()),
            Some(_) => Err(self.expected("whitespace after the final '.'")),
        }
    }

    fn term(&mut self) -> Result<Located, ParseError> {
        self.skip_blank();
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Err(self.expected("a term"));
        };
        match c {
            '{' | '[' | '#' => {
                if self.depth >= MAX_DEPTH {
                    return Err(self.error(format!(
                        "terms nested more than {MAX_DEPTH} deep are not read"
                    )));
                }
                self.depth += 1;
                let nested = match c {
                    '{' => self.tuple(pos),
                    '[' => self.list(pos),
                    _ => self.map(pos),
                };
                self.depth -= 1;
                nested
            }
            '<' => self.binary(pos),
            '"' => {
                let text = self.strings()?;
                Ok(leaf(ErlTerm::String(text), pos))
            }
            '\'' => self.quoted_atom(pos),
            '$' | '0'..='9' => self.number(pos, false),
            '-' | '+' => {
                self.bump();
                self.skip_blank();
                match self.peek() {
                    Some('$' | '0'..='9') => self.number(pos, c == '-'),
                    _ => Err(self.expected(&format!("a number after '{c}'"))),
                }
            }
            c if is_atom_start(c) => self.bare_atom(pos),
            c if c.is_uppercase() || c == '_' => {
                let name = self.word();
                Err(self.error_at(
                    pos,
                    format!("{name} is a variable; a config term cannot use variables (quote it to make an atom: '{name}')"),
                ))
            }
            _ => Err(self.expected("a term")),
        }
    }

    /// Reads `,`-separated terms up to `close`, the opening bracket already
    /// read. Returns the terms and whether a `|` tail was seen (lists only).
    fn sequence(
        &mut self,
        close: char,
        allow_tail: bool,
    ) -> Result<(Vec<Located>, Option<Located>), ParseError> {
        let mut items = Vec::new();
        self.skip_blank();
        if self.peek() == Some(close) {
            self.bump();
            return Ok((items, None));
        }
        loop {
            items.push(self.term()?);
            self.skip_blank();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(c) if c == close => {
                    self.bump();
                    return Ok((items, None));
                }
                Some('|') if allow_tail => {
                    self.bump();
                    let tail = self.term()?;
                    self.skip_blank();
                    if self.peek() != Some(close) {
                        return Err(self.expected(&format!("'{close}' after the tail of a list")));
                    }
                    self.bump();
                    return Ok((items, Some(tail)));
                }
                _ if allow_tail => return Err(self.expected(&format!("',', '|' or '{close}'"))),
                _ => return Err(self.expected(&format!("',' or '{close}'"))),
            }
        }
    }

    fn tuple(&mut self, pos: Pos) -> Result<Located, ParseError> {
        self.bump();
        let (items, _) = self.sequence('}', false)?;
        let (terms, spans) = items.into_iter().map(|l| (l.term, l.spans)).unzip();
        Ok(Located {
            term: ErlTerm::Tuple(terms),
            spans: Spans {
                pos,
                children: spans,
            },
        })
    }

    fn list(&mut self, pos: Pos) -> Result<Located, ParseError> {
        self.bump();
        let (items, tail) = self.sequence(']', true)?;
        let (mut terms, mut spans): (Vec<ErlTerm>, Vec<Spans>) =
            items.into_iter().map(|l| (l.term, l.spans)).unzip();
        if let Some(tail) = tail {
            match tail.term {
                ErlTerm::List(rest) => {
                    terms.extend(rest);
                    spans.extend(tail.spans.children);
                }
                ErlTerm::String(text) => {
                    terms.extend(text.chars().map(|c| ErlTerm::Int(i64::from(u32::from(c)))));
                }
                other => {
                    return Err(self.error_at(
                        tail.spans.pos,
                        format!(
                            "the tail of a list must be a list; improper lists ending in {} are not read",
                            other.kind()
                        ),
                    ));
                }
            }
        }
        Ok(Located {
            term: ErlTerm::List(terms),
            spans: Spans {
                pos,
                children: spans,
            },
        })
    }

    fn map(&mut self, pos: Pos) -> Result<Located, ParseError> {
        self.bump();
        if self.peek() != Some('{') {
            return Err(self.expected("'{' after '#' (a map is written #{Key => Value})"));
        }
        self.bump();
        let mut pairs = Vec::new();
        let mut spans = Vec::new();
        self.skip_blank();
        if self.peek() == Some('}') {
            self.bump();
        } else {
            loop {
                let key = self.term()?;
                self.skip_blank();
                if self.starts_with(":=") {
                    return Err(self.error(
                        "':=' only matches existing keys; write '=>' in a map term".to_owned(),
                    ));
                }
                if !self.starts_with("=>") {
                    return Err(self.expected("'=>'"));
                }
                self.bump();
                self.bump();
                let value = self.term()?;
                spans.push(key.spans);
                spans.push(value.spans);
                pairs.push((key.term, value.term));
                self.skip_blank();
                match self.peek() {
                    Some(',') => {
                        self.bump();
                    }
                    Some('}') => {
                        self.bump();
                        break;
                    }
                    _ => return Err(self.expected("',' or '}'")),
                }
            }
        }
        Ok(Located {
            term: ErlTerm::Map(pairs),
            spans: Spans {
                pos,
                children: spans,
            },
        })
    }

    fn binary(&mut self, pos: Pos) -> Result<Located, ParseError> {
        if !self.starts_with("<<") {
            return Err(self.expected("a term"));
        }
        self.bump();
        self.bump();
        let mut bytes = Vec::new();
        self.skip_blank();
        if self.starts_with(">>") {
            self.bump();
            self.bump();
            return Ok(leaf(ErlTerm::Binary(bytes), pos));
        }
        loop {
            self.binary_segment(&mut bytes)?;
            self.skip_blank();
            if self.starts_with(">>") {
                self.bump();
                self.bump();
                return Ok(leaf(ErlTerm::Binary(bytes), pos));
            }
            if self.peek() == Some(',') {
                self.bump();
            } else if self.peek() == Some(':') {
                return Err(
                    self.error("sized binary segments (Value:Size) are not read".to_owned())
                );
            } else {
                return Err(self.expected("',' or '>>'"));
            }
        }
    }

    /// One segment of a binary: a string or an integer, optionally `/utf8`.
    fn binary_segment(&mut self, bytes: &mut Vec<u8>) -> Result<(), ParseError> {
        self.skip_blank();
        let pos = self.pos();
        enum Segment {
            Text(String),
            Code(i64),
        }
        let segment = match self.peek() {
            Some('"') => Segment::Text(self.strings()?),
            Some('$' | '0'..='9') => match self.number(pos, false)?.term {
                ErlTerm::Int(value) => Segment::Code(value),
                _ => return Err(self.error_at(pos, "a float in a binary is not read".to_owned())),
            },
            _ => return Err(self.expected("a string or an integer in a binary")),
        };
        self.skip_blank();
        let utf8 = if self.peek() == Some('/') {
            self.bump();
            let kind_pos = self.pos();
            let kind = self.word();
            if kind != "utf8" {
                return Err(self.error_at(
                    kind_pos,
                    format!("binary segment type /{kind} is not read (only /utf8 is)"),
                ));
            }
            true
        } else {
            false
        };
        let mut push_code = |code: i64| -> Result<(), ParseError> {
            if utf8 {
                let c = u32::try_from(code)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.error_at(pos, format!("{code} is not a character")))?;
                let mut buffer = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            } else {
                let byte = u8::try_from(code).map_err(|_| {
                    self.error_at(
                        pos,
                        format!("{code} does not fit in a byte (write /utf8 for characters)"),
                    )
                })?;
                bytes.push(byte);
            }
            Ok(())
        };
        match segment {
            Segment::Text(text) => {
                for c in text.chars() {
                    push_code(i64::from(u32::from(c)))?;
                }
            }
            Segment::Code(code) => push_code(code)?,
        }
        Ok(())
    }

    /// A string, and the strings written right after it (Erlang joins them).
    fn strings(&mut self) -> Result<String, ParseError> {
        let mut text = String::new();
        loop {
            self.quoted('"', &mut text)?;
            self.skip_blank();
            if self.peek() != Some('"') {
                return Ok(text);
            }
        }
    }

    /// Reads a `quote`-delimited text with escapes into `out`.
    fn quoted(&mut self, quote: char, out: &mut String) -> Result<(), ParseError> {
        let start = self.pos();
        self.bump();
        loop {
            match self.bump() {
                None => {
                    let what = if quote == '"' {
                        "string"
                    } else {
                        "quoted atom"
                    };
                    return Err(self.error_at(start, format!("unterminated {what}")));
                }
                Some(c) if c == quote => return Ok(()),
                Some('\\') => out.push(self.escape()?),
                Some(c) => out.push(c),
            }
        }
    }

    /// The character of an escape sequence, the backslash already read.
    fn escape(&mut self) -> Result<char, ParseError> {
        let pos = self.pos();
        let Some(c) = self.bump() else {
            return Err(self.expected("an escape sequence after '\\'"));
        };
        let code = match c {
            'b' => 8,
            'd' => 127,
            'e' => 27,
            'f' => 12,
            'n' => 10,
            'r' => 13,
            's' => 32,
            't' => 9,
            'v' => 11,
            '0'..='7' => {
                let mut code = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(digit) => {
                            self.bump();
                            code = code * 8 + digit;
                        }
                        None => break,
                    }
                }
                code
            }
            'x' => {
                if self.peek() == Some('{') {
                    self.bump();
                    let mut code: u32 = 0;
                    let mut digits = 0;
                    while let Some(digit) = self.peek().and_then(|d| d.to_digit(16)) {
                        self.bump();
                        digits += 1;
                        code = code.saturating_mul(16).saturating_add(digit);
                    }
                    if digits == 0 || self.peek() != Some('}') {
                        return Err(self.expected("hexadecimal digits and '}' in \\x{...}"));
                    }
                    self.bump();
                    code
                } else {
                    let mut code = 0;
                    for _ in 0..2 {
                        let Some(digit) = self.peek().and_then(|d| d.to_digit(16)) else {
                            return Err(self.expected("two hexadecimal digits after \\x"));
                        };
                        self.bump();
                        code = code * 16 + digit;
                    }
                    code
                }
            }
            '^' => match self.bump() {
                Some(control) => u32::from(control) % 32,
                None => return Err(self.expected("a character after \\^")),
            },
            other => u32::from(other),
        };
        char::from_u32(code)
            .ok_or_else(|| self.error_at(pos, format!("\\x{{{code:x}}} is not a character")))
    }

    fn quoted_atom(&mut self, pos: Pos) -> Result<Located, ParseError> {
        let mut name = String::new();
        self.quoted('\'', &mut name)?;
        if name.chars().count() > MAX_ATOM_CHARS {
            return Err(self.error_at(
                pos,
                format!("an atom has at most {MAX_ATOM_CHARS} characters"),
            ));
        }
        Ok(leaf(ErlTerm::Atom(name), pos))
    }

    /// Letters, digits, `_` and `@` from the current position.
    fn word(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self.peek().filter(|&c| is_atom_char(c)) {
            self.bump();
            word.push(c);
        }
        word
    }

    fn bare_atom(&mut self, pos: Pos) -> Result<Located, ParseError> {
        let name = self.word();
        if RESERVED.contains(&name.as_str()) {
            return Err(self.error_at(
                pos,
                format!("{name} is a reserved word; write '{name}' for the atom"),
            ));
        }
        if name.chars().count() > MAX_ATOM_CHARS {
            return Err(self.error_at(
                pos,
                format!("an atom has at most {MAX_ATOM_CHARS} characters"),
            ));
        }
        Ok(leaf(ErlTerm::Atom(name), pos))
    }

    /// Digits of `radix` with `_` allowed between two digits; at least one.
    fn digits(&mut self, radix: u32) -> Result<Vec<u32>, ParseError> {
        let mut digits = Vec::new();
        loop {
            match self.peek() {
                Some(c) if c.is_digit(radix) => {
                    self.bump();
                    digits.push(c.to_digit(radix).unwrap_or(0));
                }
                Some('_')
                    if !digits.is_empty()
                        && self.peek_second().is_some_and(|c| c.is_digit(radix)) =>
                {
                    self.bump();
                }
                _ => break,
            }
        }
        if digits.is_empty() {
            return Err(self.expected(&format!("a digit of base {radix}")));
        }
        Ok(digits)
    }

    /// An integer, character code or float; `negative` when a `-` preceded it.
    fn number(&mut self, pos: Pos, negative: bool) -> Result<Located, ParseError> {
        let out_of_range = |p: &Self| {
            p.error_at(
                pos,
                "integer out of range (flack reads 64-bit integers)".to_owned(),
            )
        };
        let magnitude: i128 = if self.peek() == Some('$') {
            self.bump();
            let c = match self.bump() {
                Some('\\') => self.escape()?,
                Some(c) => c,
                None => return Err(self.expected("a character after '$'")),
            };
            i128::from(u32::from(c))
        } else {
            let start = self.offset;
            let digits = self.digits(10)?;
            if self.peek() == Some('#') {
                let base = digits
                    .iter()
                    .try_fold(0u32, |acc, d| acc.checked_mul(10)?.checked_add(*d))
                    .filter(|base| (2..=36).contains(base))
                    .ok_or_else(|| {
                        self.error_at(pos, "the base of an integer must be 2 to 36".to_owned())
                    })?;
                self.bump();
                let digits = self.digits(base)?;
                accumulate(&digits, base).ok_or_else(|| out_of_range(self))?
            } else if self.peek() == Some('.')
                && self.peek_second().is_some_and(|c| c.is_ascii_digit())
            {
                self.bump();
                self.digits(10)?;
                if matches!(self.peek(), Some('e' | 'E')) {
                    let exponent_follows = match self.peek_second() {
                        Some('+' | '-') => self.text[self.offset..]
                            .chars()
                            .nth(2)
                            .is_some_and(|c| c.is_ascii_digit()),
                        Some(c) => c.is_ascii_digit(),
                        None => false,
                    };
                    if exponent_follows {
                        self.bump();
                        if matches!(self.peek(), Some('+' | '-')) {
                            self.bump();
                        }
                        self.digits(10)?;
                    }
                }
                let text: String = self.text[start..self.offset]
                    .chars()
                    .filter(|&c| c != '_')
                    .collect();
                let value: f64 = text
                    .parse()
                    .map_err(|_| self.error_at(pos, format!("{text} is not a float")))?;
                if !value.is_finite() {
                    return Err(self.error_at(pos, format!("{text} is out of range for a float")));
                }
                let value = if negative { -value } else { value };
                return Ok(leaf(ErlTerm::Float(value), pos));
            } else {
                accumulate(&digits, 10).ok_or_else(|| out_of_range(self))?
            }
        };
        let value = if negative { -magnitude } else { magnitude };
        let value = i64::try_from(value).map_err(|_| out_of_range(self))?;
        Ok(leaf(ErlTerm::Int(value), pos))
    }
}

/// The value of `digits` in `radix`, or `None` past 128 bits.
fn accumulate(digits: &[u32], radix: u32) -> Option<i128> {
    digits.iter().try_fold(0i128, |acc, d| {
        acc.checked_mul(i128::from(radix))?
            .checked_add(i128::from(*d))
    })
}

fn leaf(term: ErlTerm, pos: Pos) -> Located {
    Located {
        term,
        spans: Spans::leaf(pos),
    }
}

/// A character that may begin a bare atom: a lowercase letter (Latin-1, as
/// Erlang's scanner reads them).
fn is_atom_start(c: char) -> bool {
    c.is_ascii_lowercase() || (('ß'..='ÿ').contains(&c) && c != '÷')
}

/// A character that may continue a bare atom.
fn is_atom_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c == '_'
        || c == '@'
        || (('À'..='ÿ').contains(&c) && c != '×' && c != '÷')
}

/// Whether `name` can be written without quotes.
fn is_bare_atom(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        && !RESERVED.contains(&name)
}

/// Writes `text` with the escapes a `quote`-delimited Erlang text needs.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str, quote: char) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c == quote => write!(f, "\\{c}")?,
            c if c.is_control() => write!(f, "\\x{{{:X}}}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

fn write_all<'t>(
    f: &mut fmt::Formatter<'_>,
    items: impl IntoIterator<Item = &'t ErlTerm>,
) -> fmt::Result {
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Erlang syntax that [`parse_value`] reads back to the same term. Floats
/// that are not finite have no Erlang syntax and are written as the atoms
/// `inf`, `'-inf'` and `nan`.
impl fmt::Display for ErlTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Atom(name) if is_bare_atom(name) => f.write_str(name),
            Self::Atom(name) => {
                f.write_str("'")?;
                write_escaped(f, name, '\'')?;
                f.write_str("'")
            }
            Self::Int(value) => write!(f, "{value}"),
            Self::Float(value) if value.is_nan() => f.write_str("nan"),
            Self::Float(value) if value.is_infinite() => {
                f.write_str(if *value > 0.0 { "inf" } else { "'-inf'" })
            }
            Self::Float(value) => {
                // Rust's shortest round-trip form, with the `.0` Erlang
                // needs before an exponent (`1e300` -> `1.0e300`).
                let text = format!("{value:?}");
                match text.find('e') {
                    Some(e) if !text[..e].contains('.') => {
                        write!(f, "{}.0{}", &text[..e], &text[e..])
                    }
                    _ => f.write_str(&text),
                }
            }
            Self::String(text) => {
                f.write_str("\"")?;
                write_escaped(f, text, '"')?;
                f.write_str("\"")
            }
            Self::Binary(bytes) => {
                f.write_str("<<")?;
                if !bytes.is_empty() && bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
                    f.write_str("\"")?;
                    let text: String = bytes.iter().map(|&b| char::from(b)).collect();
                    write_escaped(f, &text, '"')?;
                    f.write_str("\"")?;
                } else {
                    for (index, byte) in bytes.iter().enumerate() {
                        if index > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{byte}")?;
                    }
                }
                f.write_str(">>")
            }
            Self::Tuple(items) => {
                f.write_str("{")?;
                write_all(f, items)?;
                f.write_str("}")
            }
            Self::List(items) => {
                f.write_str("[")?;
                write_all(f, items)?;
                f.write_str("]")
            }
            Self::Map(pairs) => {
                f.write_str("#{")?;
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{key} => {value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(text: &str) -> ErlTerm {
        match parse_value("test", text) {
            Ok(located) => located.term,
            Err(error) => panic!("{text:?} should parse: {error}"),
        }
    }

    fn error(text: &str) -> String {
        match parse_terms("sys.config", text) {
            Ok(terms) => panic!("{text:?} should not parse, got {terms:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn atom(name: &str) -> ErlTerm {
        ErlTerm::Atom(name.to_owned())
    }

    #[test]
    fn the_original_sys_config() {
        let text = "[\n    {flack, []},\n    {gproc, [{gproc_dist, all}]}\n].\n";
        let terms = parse_terms("sys.config", text).expect("parses");
        assert_eq!(terms.len(), 1);
        assert_eq!(
            terms[0].term,
            ErlTerm::List(vec![
                ErlTerm::Tuple(vec![atom("flack"), ErlTerm::List(vec![])]),
                ErlTerm::Tuple(vec![
                    atom("gproc"),
                    ErlTerm::List(vec![ErlTerm::Tuple(vec![atom("gproc_dist"), atom("all")])]),
                ]),
            ])
        );
        let gproc = terms[0].spans.child(1);
        assert_eq!(gproc.pos, Pos { line: 3, column: 5 });
        assert_eq!(
            gproc.child(1).child(0).child(1).pos,
            Pos {
                line: 3,
                column: 27
            }
        );
    }

    #[test]
    fn atoms() {
        assert_eq!(value("flack1@vm"), atom("flack1@vm"));
        assert_eq!(
            value("'flack1@host.example.com'"),
            atom("flack1@host.example.com")
        );
        assert_eq!(value(r"'it\'s\n'"), atom("it's\n"));
        assert_eq!(value("''"), atom(""));
        assert_eq!(value("'end'"), atom("end"));
        assert_eq!(value("café"), atom("café"));
    }

    #[test]
    fn numbers() {
        assert_eq!(value("8080"), ErlTerm::Int(8080));
        assert_eq!(value("-42"), ErlTerm::Int(-42));
        assert_eq!(value("- 42"), ErlTerm::Int(-42));
        assert_eq!(value("+7"), ErlTerm::Int(7));
        assert_eq!(value("16#ff"), ErlTerm::Int(255));
        assert_eq!(value("-16#FF"), ErlTerm::Int(-255));
        assert_eq!(value("2#1010"), ErlTerm::Int(10));
        assert_eq!(value("36#z"), ErlTerm::Int(35));
        assert_eq!(value("1_000_000"), ErlTerm::Int(1_000_000));
        assert_eq!(value("$a"), ErlTerm::Int(97));
        assert_eq!(value("$\\n"), ErlTerm::Int(10));
        assert_eq!(value("$ "), ErlTerm::Int(32));
        assert_eq!(value("-$a"), ErlTerm::Int(-97));
        assert_eq!(value("2.5"), ErlTerm::Float(2.5));
        assert_eq!(value("-1.5e3"), ErlTerm::Float(-1500.0));
        assert_eq!(value("1.0E-2"), ErlTerm::Float(0.01));
        assert_eq!(value("9223372036854775807"), ErlTerm::Int(i64::MAX));
        assert_eq!(value("-9223372036854775808"), ErlTerm::Int(i64::MIN));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(value(r#""hello""#), ErlTerm::String("hello".into()));
        assert_eq!(
            value(
                r#""a" "b"  % joined
                              "c""#
            ),
            ErlTerm::String("abc".into())
        );
        assert_eq!(
            value(r#""\t\s\x41\x{1F600}\101\^a\e\d\"\\""#),
            ErlTerm::String("\t A\u{1F600}A\u{1}\u{1b}\u{7f}\"\\".into())
        );
        assert_eq!(value(r#""""#), ErlTerm::String(String::new()));
    }

    #[test]
    fn binaries() {
        assert_eq!(value("<<>>"), ErlTerm::Binary(vec![]));
        assert_eq!(value(r#"<<"abc">>"#), ErlTerm::Binary(b"abc".to_vec()));
        assert_eq!(
            value(r#"<< "a" , 0, $b >>"#),
            ErlTerm::Binary(b"a\0b".to_vec())
        );
        assert_eq!(
            value(r#"<<"é"/utf8>>"#),
            ErlTerm::Binary("é".as_bytes().to_vec())
        );
        assert_eq!(value(r#"<<"é">>"#), ErlTerm::Binary(vec![0xe9]));
        assert_eq!(value("<<1,2,255>>"), ErlTerm::Binary(vec![1, 2, 255]));
    }

    #[test]
    fn containers() {
        assert_eq!(value("{}"), ErlTerm::Tuple(vec![]));
        assert_eq!(value("[]"), ErlTerm::List(vec![]));
        assert_eq!(
            value("[a|[b,c]]"),
            ErlTerm::List(vec![atom("a"), atom("b"), atom("c")])
        );
        assert_eq!(
            value(r#"[a|"b"]"#),
            ErlTerm::List(vec![atom("a"), ErlTerm::Int(98)])
        );
        assert_eq!(
            value("#{port => 8080, <<\"k\">> => [x]}"),
            ErlTerm::Map(vec![
                (atom("port"), ErlTerm::Int(8080)),
                (
                    ErlTerm::Binary(b"k".to_vec()),
                    ErlTerm::List(vec![atom("x")])
                ),
            ])
        );
        assert_eq!(value("#{}"), ErlTerm::Map(vec![]));
        assert_eq!(
            value("{a, 1}."),
            ErlTerm::Tuple(vec![atom("a"), ErlTerm::Int(1)])
        );
    }

    #[test]
    fn several_terms_like_file_consult() {
        let terms = parse_terms("f", "a. {b}.\n% c.\n[c]. % done").expect("parses");
        assert_eq!(terms.len(), 3);
        assert!(
            parse_terms("f", "  % nothing\n")
                .expect("parses")
                .is_empty()
        );
    }

    #[test]
    fn errors_point_at_line_and_column() {
        assert_eq!(
            error("[\n  {flack, []},\n  {gproc, [{gproc_dist, all}}\n]."),
            "sys.config:3:29: expected ',', '|' or ']', found '}'"
        );
        assert_eq!(
            error("[{flack, []}]"),
            "sys.config:1:14: expected '.' after the term, found end of file"
        );
        assert_eq!(
            error("[{flack, [{port, Port}]}]."),
            "sys.config:1:18: Port is a variable; a config term cannot use variables (quote it to make an atom: 'Port')"
        );
        assert_eq!(error("[\"abc]."), "sys.config:1:2: unterminated string");
        assert_eq!(
            error("{a, 'b}."),
            "sys.config:1:5: unterminated quoted atom"
        );
        assert_eq!(
            error("[end]."),
            "sys.config:1:2: end is a reserved word; write 'end' for the atom"
        );
        assert_eq!(
            error("99999999999999999999."),
            "sys.config:1:1: integer out of range (flack reads 64-bit integers)"
        );
        assert_eq!(
            error("[a|b]."),
            "sys.config:1:4: the tail of a list must be a list; improper lists ending in an atom are not read"
        );
        assert_eq!(
            error("<<1:8>>."),
            "sys.config:1:4: sized binary segments (Value:Size) are not read"
        );
        assert_eq!(
            error("<<256>>."),
            "sys.config:1:3: 256 does not fit in a byte (write /utf8 for characters)"
        );
        assert_eq!(
            error("#{a := 1}."),
            "sys.config:1:5: ':=' only matches existing keys; write '=>' in a map term"
        );
        assert_eq!(
            error("a.b"),
            "sys.config:1:3: expected whitespace after the final '.', found 'b'"
        );
        assert_eq!(
            error("37#1."),
            "sys.config:1:1: the base of an integer must be 2 to 36"
        );
        assert_eq!(
            error("\"\\x{110000}\"."),
            "sys.config:1:3: \\x{110000} is not a character"
        );
        assert!(error("1.0e999.").contains("out of range for a float"));
        assert!(error("{a,,b}.").starts_with("sys.config:1:4: expected a term"));
    }

    #[test]
    fn parse_value_refuses_trailing_text() {
        let error = parse_value("-flack port", "8081 x").expect_err("trailing text");
        assert_eq!(
            error.to_string(),
            "-flack port:1:6: unexpected 'x' after the term"
        );
        assert!(parse_value("v", "").is_err());
        assert_eq!(value("8081."), ErlTerm::Int(8081));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = "[".repeat(100_000);
        let error = parse_value("deep", &deep).expect_err("too deep");
        assert!(error.message.contains("nested more than"), "{error}");
        let ok = format!("{}{}", "{".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(parse_value("deep", &ok).is_ok());
    }

    #[test]
    fn display_writes_erlang_syntax() {
        let term = ErlTerm::List(vec![
            ErlTerm::Tuple(vec![
                atom("gproc_dist"),
                ErlTerm::List(vec![atom("flack1@vm"), atom("Flack@Vm")]),
            ]),
            ErlTerm::Float(1e300),
            ErlTerm::String("a\"b".into()),
            ErlTerm::Binary(b"ok".to_vec()),
            ErlTerm::Binary(vec![0, 255]),
            ErlTerm::Map(vec![(atom("end"), ErlTerm::Int(-1))]),
        ]);
        assert_eq!(
            term.to_string(),
            r#"[{gproc_dist,[flack1@vm,'Flack@Vm']},1.0e300,"a\"b",<<"ok">>,<<0,255>>,#{'end' => -1}]"#
        );
    }

    fn arbitrary_term() -> impl Strategy<Value = ErlTerm> {
        let leaf = prop_oneof![
            "\\PC{0,12}".prop_map(ErlTerm::Atom),
            "[a-z][a-z0-9_@]{0,8}".prop_map(ErlTerm::Atom),
            any::<i64>().prop_map(ErlTerm::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(ErlTerm::Float),
            any::<String>().prop_map(ErlTerm::String),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(ErlTerm::Binary),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(ErlTerm::Tuple),
                proptest::collection::vec(inner.clone(), 0..5).prop_map(ErlTerm::List),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(ErlTerm::Map),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_terms("fuzz", &text);
            let _ = parse_value("fuzz", &text);
        }

        #[test]
        fn erlang_looking_text_never_panics(text in "[\\[\\]{}<>#,.|'\"$\\\\%+\\-=:/_ \n\t0-9a-fA-Zxe^@é]{0,64}") {
            let _ = parse_terms("fuzz", &text);
            let _ = parse_value("fuzz", &text);
        }

        #[test]
        fn written_terms_read_back(term in arbitrary_term()) {
            let text = term.to_string();
            let read = parse_value("roundtrip", &text);
            prop_assert_eq!(read.map(|l| l.term), Ok(term), "text: {}", text);
        }
    }
}
