//! Reading the reference wire transcripts of `tests/data/transcripts/`: the
//! message traces captured from a cluster of original Erlang flack nodes.
//!
//! A trace file is a sequence of events, each a header line, the message as
//! Erlang's `~tp` printed it (possibly over several indented lines) and a
//! `%% pids:` legend:
//!
//! ```text
//! 2026-11-28T04:45:45.170156Z flack1@vm RECV <flack1@vm.93.0>[flack1@vm gproc_dist] from~=<flack2@vm.93.0>[flack2@vm gproc_dist]
//!     {join,<6816.93.0>}
//!   %% pids: <flack1@vm.93.0>=flack1@vm gproc_dist, <flack2@vm.93.0>=flack2@vm gproc_dist
//! ```
//!
//! and `%% <time> ===== text` markers between them ("node started (tracer
//! armed)" starts a new life of the traced node).
//!
//! Printed terms become `eetf::Term`s. `~p` prints a remote pid as
//! `<Idx.N.S>`, where `Idx` is the peer's slot in the traced VM's node
//! table: a number that means nothing outside that VM. The header and legend
//! name the same processes in a node-independent form, `<flack2@vm.93.0>`.
//! For each life of each file, the index → node map is the only assignment
//! consistent with every event (each remote pid must be one of the legend's
//! pids with the same numbers, indices are injective); anything ambiguous
//! or contradictory is an error, never a guess. Pids, references and ports
//! then carry real node names (and one fixed [`CREATION`]), so the same
//! process or reference is the same term in every file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use eetf::{
    Atom, BigInteger, Binary, ByteList, FixInteger, Float, ImproperList, List, Map, Pid, Port,
    Reference, Term, Tuple,
};

/// The creation every pid, reference and port gets: the traces do not show
/// creations, so one fixed value keeps equal processes equal.
pub const CREATION: u32 = 1;

/// The prefix of the node name a remote pid carries until its index is
/// resolved.
const UNRESOLVED: &str = "unresolved-node-index#";

/// The directory of the transcripts, `tests/data/transcripts` of the
/// checkout (a copy of the project's reference captures, kept with the tests).
/// Panics with a clear message when it is missing: these tests must not pass
/// by having nothing to read.
pub fn transcripts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/transcripts");
    assert!(
        dir.join("README.md").is_file(),
        "the reference transcripts are missing: expected {} (they are part of the \
         repository; restore them from git). The transcript replay cannot run without them.",
        dir.display()
    );
    dir
}

/// Why a printed term could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A fun (`#Fun<...>`): it has no faithful `eetf` form here.
    Fun,
    /// Anything else, with the byte offset.
    Syntax(usize, String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Fun => write!(f, "a fun, which the replay does not model"),
            ParseError::Syntax(at, what) => write!(f, "at byte {at}: {what}"),
        }
    }
}

/// Parses one term as `~p`/`~tp` prints it. Pids, references and ports of
/// index 0 belong to `local`; other indices stay unresolved (see
/// [`TraceFile`] for files, where they are resolved).
pub fn parse_term(text: &str, local: &str) -> Result<Term, ParseError> {
    let mut parser = TermParser {
        text,
        pos: 0,
        local,
    };
    parser.skip_ws();
    let term = parser.term()?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("trailing text after the term"));
    }
    Ok(term)
}

struct TermParser<'a> {
    text: &'a str,
    pos: usize,
    local: &'a str,
}

impl TermParser<'_> {
    fn error(&self, what: &str) -> ParseError {
        let rest: String = self.text[self.pos..].chars().take(30).collect();
        ParseError::Syntax(self.pos, format!("{what} (before {rest:?})"))
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), ParseError> {
        self.skip_ws();
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {token:?}")))
        }
    }

    fn node_of(&self, index: u32) -> String {
        if index == 0 {
            self.local.to_string()
        } else {
            format!("{UNRESOLVED}{index}")
        }
    }

    fn term(&mut self) -> Result<Term, ParseError> {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with("<<") {
            self.binary()
        } else if rest.starts_with('<') {
            self.pid()
        } else if rest.starts_with("#{") {
            self.map()
        } else if rest.starts_with("#Ref<") {
            self.reference()
        } else if rest.starts_with("#Port<") {
            self.port()
        } else if rest.starts_with("#Fun<") {
            Err(ParseError::Fun)
        } else if rest.starts_with('{') {
            self.tuple()
        } else if rest.starts_with('[') {
            self.list()
        } else if rest.starts_with('"') {
            let text = self.strings()?;
            Ok(string_term(&text))
        } else if rest.starts_with('\'') {
            self.bump();
            let name = self.quoted('\'')?;
            Ok(Term::from(Atom::from(name)))
        } else if rest.starts_with(|c: char| c.is_ascii_digit())
            || (rest.starts_with('-') && rest[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            self.number()
        } else if rest.starts_with(|c: char| c.is_lowercase()) {
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@')
            {
                self.bump();
            }
            Ok(Term::from(Atom::from(&self.text[start..self.pos])))
        } else {
            Err(self.error("not the start of a term"))
        }
    }

    /// `A.B.C...` up to `>`.
    fn dotted(&mut self) -> Result<Vec<u64>, ParseError> {
        let mut numbers = Vec::new();
        loop {
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            let digits = &self.text[start..self.pos];
            numbers.push(
                digits
                    .parse::<u64>()
                    .map_err(|_| self.error("expected a number"))?,
            );
            match self.bump() {
                Some('.') => continue,
                Some('>') => return Ok(numbers),
                _ => return Err(self.error("expected '.' or '>'")),
            }
        }
    }

    fn index(&self, value: u64) -> Result<u32, ParseError> {
        u32::try_from(value).map_err(|_| self.error("number out of range"))
    }

    fn pid(&mut self) -> Result<Term, ParseError> {
        self.expect("<")?;
        let numbers = self.dotted()?;
        let [index, id, serial] = numbers[..] else {
            return Err(self.error("a pid has three numbers"));
        };
        Ok(Term::from(Pid::new(
            self.node_of(self.index(index)?),
            self.index(id)?,
            self.index(serial)?,
            CREATION,
        )))
    }

    fn reference(&mut self) -> Result<Term, ParseError> {
        self.expect("#Ref<")?;
        let numbers = self.dotted()?;
        if numbers.len() < 2 {
            return Err(self.error("a reference has a node and at least one word"));
        }
        // Printed most significant word first; the wire (and eetf) order is
        // least significant first.
        let mut id = numbers[1..]
            .iter()
            .map(|&word| self.index(word))
            .collect::<Result<Vec<u32>, _>>()?;
        id.reverse();
        Ok(Term::from(Reference {
            node: Atom::from(self.node_of(self.index(numbers[0])?)),
            id,
            creation: CREATION,
        }))
    }

    fn port(&mut self) -> Result<Term, ParseError> {
        self.expect("#Port<")?;
        let numbers = self.dotted()?;
        let [index, id] = numbers[..] else {
            return Err(self.error("a port has two numbers"));
        };
        Ok(Term::from(Port {
            node: Atom::from(self.node_of(self.index(index)?)),
            id,
            creation: CREATION,
        }))
    }

    fn tuple(&mut self) -> Result<Term, ParseError> {
        self.expect("{")?;
        let elements = self.sequence('}')?;
        Ok(Term::from(Tuple::from(elements)))
    }

    /// Comma-separated terms up to `close` (consumed).
    fn sequence(&mut self, close: char) -> Result<Vec<Term>, ParseError> {
        let mut elements = Vec::new();
        self.skip_ws();
        if self.peek() == Some(close) {
            self.bump();
            return Ok(elements);
        }
        loop {
            elements.push(self.term()?);
            self.skip_ws();
            match self.bump() {
                Some(',') => continue,
                Some(c) if c == close => return Ok(elements),
                _ => return Err(self.error(&format!("expected ',' or {close:?}"))),
            }
        }
    }

    fn list(&mut self) -> Result<Term, ParseError> {
        self.expect("[")?;
        let mut elements = Vec::new();
        self.skip_ws();
        if self.eat("]") {
            return Ok(Term::from(List::nil()));
        }
        loop {
            elements.push(self.term()?);
            self.skip_ws();
            match self.bump() {
                Some(',') => continue,
                Some(']') => return Ok(Term::from(List::from(elements))),
                Some('|') => {
                    let tail = self.term()?;
                    self.expect("]")?;
                    return Ok(match tail {
                        // `[a|[b]]` is the proper list `[a,b]`.
                        Term::List(rest) => {
                            elements.extend(rest.elements);
                            Term::from(List::from(elements))
                        }
                        tail => Term::from(ImproperList::from((elements, tail))),
                    });
                }
                _ => return Err(self.error("expected ',', '|' or ']'")),
            }
        }
    }

    fn map(&mut self) -> Result<Term, ParseError> {
        self.expect("#{")?;
        let mut map = std::collections::HashMap::new();
        self.skip_ws();
        if self.eat("}") {
            return Ok(Term::from(Map { map }));
        }
        loop {
            let key = self.term()?;
            self.expect("=>")?;
            let value = self.term()?;
            if map.insert(key, value).is_some() {
                return Err(self.error("a map key printed twice"));
            }
            self.skip_ws();
            match self.bump() {
                Some(',') => continue,
                Some('}') => return Ok(Term::from(Map { map })),
                _ => return Err(self.error("expected ',' or '}' in a map")),
            }
        }
    }

    fn binary(&mut self) -> Result<Term, ParseError> {
        self.expect("<<")?;
        let mut bytes = Vec::new();
        self.skip_ws();
        if self.eat(">>") {
            return Ok(Term::from(Binary::from(bytes)));
        }
        loop {
            self.skip_ws();
            if self.peek() == Some('"') {
                let text = self.strings()?;
                if self.eat("/utf8") {
                    bytes.extend_from_slice(text.as_bytes());
                } else {
                    for c in text.chars() {
                        let byte = u8::try_from(u32::from(c))
                            .map_err(|_| self.error("a non-latin1 character without /utf8"))?;
                        bytes.push(byte);
                    }
                }
            } else {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
                let byte = self.text[start..self.pos]
                    .parse::<u8>()
                    .map_err(|_| self.error("a binary segment that is not a byte"))?;
                bytes.push(byte);
                if self.peek() == Some(':') {
                    return Err(self.error("bit-sized binary segments are not modelled"));
                }
            }
            self.skip_ws();
            if self.eat(">>") {
                return Ok(Term::from(Binary::from(bytes)));
            }
            // Long strings are printed as adjacent literals; segments are
            // separated by commas.
            self.eat(",");
        }
    }

    /// One or more adjacent string literals (`~p` splits long strings).
    fn strings(&mut self) -> Result<String, ParseError> {
        let mut text = String::new();
        while self.peek() == Some('"') {
            self.bump();
            text.push_str(&self.quoted('"')?);
            let save = self.pos;
            self.skip_ws();
            if self.peek() != Some('"') {
                self.pos = save;
            }
        }
        Ok(text)
    }

    /// The body of a quoted atom or string, after the opening quote, with
    /// Erlang's escapes.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error("unterminated quoted text")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => out.push(self.escape()?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, ParseError> {
        let c = self
            .bump()
            .ok_or_else(|| self.error("a dangling backslash"))?;
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            'e' => '\u{1b}',
            's' => ' ',
            'd' => '\u{7f}',
            '^' => {
                let c = self.bump().ok_or_else(|| self.error("a dangling \\^"))?;
                char::from((c as u8) & 0x1f)
            }
            'x' => {
                let digits = if self.eat("{") {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c != '}') {
                        self.bump();
                    }
                    let digits = self.text[start..self.pos].to_string();
                    self.expect("}")?;
                    digits
                } else {
                    let start = self.pos;
                    self.bump();
                    self.bump();
                    self.text[start..self.pos].to_string()
                };
                u32::from_str_radix(&digits, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.error("a bad \\x escape"))?
            }
            '0'..='7' => {
                let mut value = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|c| c.to_digit(8)) {
                        Some(digit) => {
                            value = value * 8 + digit;
                            self.bump();
                        }
                        None => break,
                    }
                }
                char::from_u32(value).ok_or_else(|| self.error("a bad octal escape"))?
            }
            other => other,
        })
    }

    fn number(&mut self) -> Result<Term, ParseError> {
        let start = self.pos;
        self.eat("-");
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let is_float = self.rest().starts_with('.')
            && self.rest()[1..].starts_with(|c: char| c.is_ascii_digit());
        if is_float {
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
            if self.peek().is_some_and(|c| c == 'e' || c == 'E') {
                self.bump();
                if self.peek().is_some_and(|c| c == '-' || c == '+') {
                    self.bump();
                }
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
            }
            let value: f64 = self.text[start..self.pos]
                .parse()
                .map_err(|_| self.error("a bad float"))?;
            return Float::try_from(value)
                .map(Term::from)
                .map_err(|_| self.error("a non-finite float"));
        }
        let digits = &self.text[start..self.pos];
        if self.eat("#") {
            let radix: u32 = digits.parse().map_err(|_| self.error("a bad radix"))?;
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                self.bump();
            }
            let value = i64::from_str_radix(&self.text[start..self.pos], radix)
                .map_err(|_| self.error("a bad radix integer"))?;
            return Ok(integer(value));
        }
        let value: i64 = digits
            .parse()
            .map_err(|_| self.error("an integer beyond 64 bits"))?;
        Ok(integer(value))
    }
}

/// An integer as the external term format carries it (and `eetf` decodes
/// it): 32-bit values are small integers.
fn integer(value: i64) -> Term {
    match i32::try_from(value) {
        Ok(small) => Term::from(FixInteger::from(small)),
        Err(_) => Term::from(BigInteger::from(value)),
    }
}

/// A printed string is a list of characters: a byte list when every
/// character fits a byte, `[]` when empty.
fn string_term(text: &str) -> Term {
    if text.is_empty() {
        return Term::from(List::nil());
    }
    let codes: Vec<u32> = text.chars().map(u32::from).collect();
    if codes.iter().all(|&code| code < 256) {
        Term::from(ByteList::from(
            codes.iter().map(|&code| code as u8).collect::<Vec<u8>>(),
        ))
    } else {
        Term::from(List::from(
            codes
                .iter()
                .map(|&code| integer(i64::from(code)))
                .collect::<Vec<Term>>(),
        ))
    }
}

/// SEND or RECV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The traced process sent the message.
    Send,
    /// The message arrived in the traced process's mailbox (Erlang traces
    /// receive at arrival, not when a selective receive takes it).
    Recv,
}

/// A process named in a header: its node-independent pid and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The pid, with its real node.
    pub pid: Pid,
    /// What the tracer called it, e.g. `flack1@vm gproc_dist`.
    pub desc: String,
}

impl Process {
    /// Whether the tracer named it by this role (`gproc_dist`,
    /// `timer_server`, ...).
    pub fn is(&self, role: &str) -> bool {
        self.desc.ends_with(role)
    }
}

/// The other side of an event: `to=` of a SEND, `from~=` of a RECV.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// A process.
    Process(Process),
    /// A registered name, `{Name, Node}` or a bare local name.
    Registered {
        /// The registered name.
        name: String,
        /// The node, for `{Name, Node}`.
        node: Option<String>,
    },
    /// A node (heartbeats name their sender node).
    Node(String),
    /// `from~=leader`: a leader's broadcast or reply.
    Leader,
    /// `from~=?`: the message does not tell.
    Unknown,
    /// A port.
    Port(Port),
}

impl Peer {
    /// The node this peer is on, when the header tells.
    pub fn node(&self) -> Option<&str> {
        match self {
            Peer::Process(process) => Some(&process.pid.node.name),
            Peer::Registered { node, .. } => node.as_deref(),
            Peer::Node(node) => Some(node),
            Peer::Leader | Peer::Unknown | Peer::Port(_) => None,
        }
    }
}

/// One traced message.
#[derive(Debug, Clone)]
pub struct Event {
    /// Line of the header in the file (1-based).
    pub line: usize,
    /// The UTC trace timestamp as printed.
    pub timestamp: String,
    /// SEND or RECV.
    pub dir: Dir,
    /// The traced process.
    pub process: Process,
    /// `to=` (SEND) or `from~=` (RECV).
    pub peer: Peer,
    /// The message, with every pid, reference and port on its real node.
    pub term: Term,
    /// The message as printed.
    pub raw: String,
    /// The `%% pids:` legend.
    pub legend: Vec<Process>,
    /// Which life of the traced node (0-based; a restart starts a new one).
    pub life: usize,
}

/// A `%% <time> ===== text` line.
#[derive(Debug, Clone)]
pub struct Marker {
    /// Line in the file.
    pub line: usize,
    /// Its timestamp.
    pub timestamp: String,
    /// The text after `=====`.
    pub text: String,
}

/// A whole trace file.
#[derive(Debug, Clone)]
pub struct TraceFile {
    /// File name, e.g. `flack1@vm.gproc_dist.trace`.
    pub name: String,
    /// The traced node.
    pub node: String,
    /// Events in file order.
    pub events: Vec<Event>,
    /// Markers in file order.
    pub markers: Vec<Marker>,
    /// Per life: the node table index → node name map derived for it.
    pub node_indices: Vec<BTreeMap<u32, String>>,
    /// Events left out because their term holds a fun: (line, reason).
    pub skipped: Vec<(usize, String)>,
}

impl Event {
    /// The timestamp in microseconds since the Unix epoch.
    pub fn micros(&self) -> i64 {
        micros(&self.timestamp)
    }
}

impl Marker {
    /// The timestamp in microseconds since the Unix epoch.
    pub fn micros(&self) -> i64 {
        micros(&self.timestamp)
    }
}

/// `2026-11-28T04:45:43.914298Z` in microseconds since the Unix epoch.
/// Each VM stamps its own trace: timestamps of different nodes are only
/// comparable up to their clocks' (small) disagreement.
pub fn micros(timestamp: &str) -> i64 {
    let number = |range: std::ops::Range<usize>| -> i64 {
        timestamp
            .get(range)
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("bad timestamp {timestamp}"))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let seconds = number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    let fraction = timestamp
        .get(20..timestamp.len() - 1)
        .unwrap_or_else(|| panic!("bad timestamp {timestamp}"));
    let micros: i64 = format!("{fraction:0<6}")[..6]
        .parse()
        .unwrap_or_else(|_| panic!("bad timestamp {timestamp}"));
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + seconds) * 1_000_000 + micros
}

impl TraceFile {
    /// Number of lives (restarts + 1).
    pub fn lives(&self) -> usize {
        self.node_indices.len()
    }

    /// The events of one life.
    pub fn life(&self, life: usize) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |event| event.life == life)
    }
}

/// Loads and resolves `tests/data/transcripts/<name>`.
pub fn load(name: &str) -> TraceFile {
    let path = transcripts_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    parse_file(name, &text).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// A header line: `<time> <node> SEND|RECV <pid>[desc] to=|from~=<peer>`.
struct Header {
    timestamp: String,
    node: String,
    dir: Dir,
    process: Process,
    peer: String,
}

fn is_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 20 && bytes[4] == b'-' && bytes[10] == b'T' && text.ends_with('Z')
}

fn parse_header(line: &str) -> Result<Header, String> {
    let mut parts = line.splitn(4, ' ');
    let (Some(timestamp), Some(node), Some(dir), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a short header".into());
    };
    let dir = match dir {
        "SEND" => Dir::Send,
        "RECV" => Dir::Recv,
        other => return Err(format!("unknown direction {other}")),
    };
    let (process, peer) = if let Some(at) = rest.find("] to=") {
        (&rest[..=at], &rest[at + 5..])
    } else if let Some(at) = rest.find("] from~=") {
        (&rest[..=at], &rest[at + 8..])
    } else {
        return Err("no to= or from~=".into());
    };
    let process = parse_process(process)?;
    Ok(Header {
        timestamp: timestamp.to_string(),
        node: node.to_string(),
        dir,
        process,
        peer: peer.to_string(),
    })
}

/// `<flack2@vm.93.0>`: the node-independent pid form.
fn parse_node_pid(text: &str) -> Result<Pid, String> {
    let inner = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .ok_or_else(|| format!("not a pid: {text}"))?;
    let mut parts = inner.rsplitn(3, '.');
    let (Some(serial), Some(id), Some(node)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("not a pid: {text}"));
    };
    if !node.contains('@') {
        return Err(format!("a header pid without a node name: {text}"));
    }
    let id = id.parse().map_err(|_| format!("bad pid id in {text}"))?;
    let serial = serial
        .parse()
        .map_err(|_| format!("bad pid serial in {text}"))?;
    Ok(Pid::new(node, id, serial, CREATION))
}

/// `<flack2@vm.93.0>[flack2@vm gproc_dist]`.
fn parse_process(text: &str) -> Result<Process, String> {
    let open = text
        .find('[')
        .ok_or_else(|| format!("no [desc] in {text}"))?;
    let desc = text[open + 1..]
        .strip_suffix(']')
        .ok_or_else(|| format!("unterminated [desc] in {text}"))?;
    Ok(Process {
        pid: parse_node_pid(&text[..open])?,
        desc: desc.to_string(),
    })
}

fn parse_peer(text: &str, local: &str) -> Result<Peer, String> {
    let text = text.trim();
    if text == "?" {
        Ok(Peer::Unknown)
    } else if text == "leader" {
        Ok(Peer::Leader)
    } else if text.starts_with("#Port<") {
        match parse_term(text, local).map_err(|e| e.to_string())? {
            Term::Port(port) => Ok(Peer::Port(port)),
            _ => Err(format!("bad port peer {text}")),
        }
    } else if text.starts_with('<') {
        parse_process(text).map(Peer::Process)
    } else if text.starts_with('{') {
        match parse_term(text, local).map_err(|e| e.to_string())? {
            Term::Tuple(tuple) => match tuple.elements.as_slice() {
                [Term::Atom(name), Term::Atom(node)] => Ok(Peer::Registered {
                    name: name.name.clone(),
                    node: Some(node.name.clone()),
                }),
                _ => Err(format!("bad registered peer {text}")),
            },
            _ => Err(format!("bad registered peer {text}")),
        }
    } else if text.contains('@') {
        Ok(Peer::Node(text.to_string()))
    } else {
        Ok(Peer::Registered {
            name: text.to_string(),
            node: None,
        })
    }
}

/// `  %% pids: <a@h.1.0>=desc, <b@h.2.0>=desc`.
fn parse_legend(text: &str) -> Result<Vec<Process>, String> {
    let mut entries = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let close = rest
            .find(">=")
            .ok_or_else(|| format!("bad legend at {rest}"))?;
        let pid = parse_node_pid(&rest[..=close])?;
        let after = &rest[close + 2..];
        let end = after.find(", <").unwrap_or(after.len());
        entries.push(Process {
            pid,
            desc: after[..end].to_string(),
        });
        rest = after[end..].trim_start_matches(", ");
    }
    Ok(entries)
}

/// Every pid, reference and port in a term.
fn visit_ids<'t>(term: &'t Term, found: &mut Vec<Id<'t>>) {
    match term {
        Term::Pid(pid) => found.push(Id::Pid(pid)),
        Term::Reference(reference) => found.push(Id::Node(&reference.node.name)),
        Term::Port(port) => found.push(Id::Node(&port.node.name)),
        Term::List(list) => list.elements.iter().for_each(|t| visit_ids(t, found)),
        Term::ImproperList(list) => {
            list.elements.iter().for_each(|t| visit_ids(t, found));
            visit_ids(&list.last, found);
        }
        Term::Tuple(tuple) => tuple.elements.iter().for_each(|t| visit_ids(t, found)),
        Term::Map(map) => map.map.iter().for_each(|(k, v)| {
            visit_ids(k, found);
            visit_ids(v, found);
        }),
        _ => {}
    }
}

enum Id<'t> {
    Pid(&'t Pid),
    Node(&'t str),
}

fn unresolved_index(node: &str) -> Option<u32> {
    node.strip_prefix(UNRESOLVED)?.parse().ok()
}

/// Replaces every unresolved node index by its node name.
fn resolve(term: Term, indices: &BTreeMap<u32, String>) -> Result<Term, String> {
    let node = |name: &str| -> Result<Option<String>, String> {
        match unresolved_index(name) {
            None => Ok(None),
            Some(index) => indices
                .get(&index)
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("node index {index} is not resolved")),
        }
    };
    Ok(match term {
        Term::Pid(mut pid) => {
            if let Some(name) = node(&pid.node.name)? {
                pid.node = Atom::from(name);
            }
            Term::Pid(pid)
        }
        Term::Reference(mut reference) => {
            if let Some(name) = node(&reference.node.name)? {
                reference.node = Atom::from(name);
            }
            Term::Reference(reference)
        }
        Term::Port(mut port) => {
            if let Some(name) = node(&port.node.name)? {
                port.node = Atom::from(name);
            }
            Term::Port(port)
        }
        Term::List(list) => Term::from(List::from(
            list.elements
                .into_iter()
                .map(|t| resolve(t, indices))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Term::ImproperList(list) => Term::from(ImproperList::from((
            list.elements
                .into_iter()
                .map(|t| resolve(t, indices))
                .collect::<Result<Vec<_>, _>>()?,
            resolve(*list.last, indices)?,
        ))),
        Term::Tuple(tuple) => Term::from(Tuple::from(
            tuple
                .elements
                .into_iter()
                .map(|t| resolve(t, indices))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Term::Map(map) => {
            let mut resolved = std::collections::HashMap::new();
            for (key, value) in map.map {
                resolved.insert(resolve(key, indices)?, resolve(value, indices)?);
            }
            Term::from(Map { map: resolved })
        }
        other => other,
    })
}

/// An event before its remote pids are resolved.
struct RawEvent {
    header: Header,
    line: usize,
    raw: String,
    term: Term,
    legend: Vec<Process>,
    life: usize,
}

/// The index → node map of one life: every remote pid `<Idx.N.S>` of an
/// event must be one of that event's named pids `<node.N.S>` (legend,
/// traced process, peer) on another node; each index keeps the nodes that
/// fit every event, and a node pinned to one index leaves the others.
fn solve_indices(events: &[&RawEvent], local: &str) -> Result<BTreeMap<u32, String>, String> {
    let mut candidates: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut only_in_refs: BTreeSet<u32> = BTreeSet::new();
    for event in events {
        let mut ids = Vec::new();
        visit_ids(&event.term, &mut ids);
        let mut named: Vec<&Pid> = event.legend.iter().map(|p| &p.pid).collect();
        named.push(&event.header.process.pid);
        let peer = parse_peer(&event.header.peer, local)?;
        if let Peer::Process(process) = &peer {
            named.push(&process.pid);
        }
        for id in ids {
            match id {
                Id::Pid(pid) => {
                    let Some(index) = unresolved_index(&pid.node.name) else {
                        continue;
                    };
                    let fits: BTreeSet<String> = named
                        .iter()
                        .filter(|n| n.id == pid.id && n.serial == pid.serial)
                        .map(|n| n.node.name.clone())
                        .filter(|node| node != local)
                        .collect();
                    if fits.is_empty() {
                        return Err(format!(
                            "line {}: remote pid <{index}.{}.{}> has no legend entry",
                            event.line, pid.id, pid.serial
                        ));
                    }
                    let set = candidates.entry(index).or_insert_with(|| fits.clone());
                    set.retain(|node| fits.contains(node));
                    if set.is_empty() {
                        return Err(format!(
                            "line {}: no node fits index {index} in every event",
                            event.line
                        ));
                    }
                }
                Id::Node(node) => {
                    if let Some(index) = unresolved_index(node) {
                        only_in_refs.insert(index);
                    }
                }
            }
        }
    }
    // Propagate: a node pinned to one index is no other index's.
    loop {
        let pinned: Vec<(u32, String)> = candidates
            .iter()
            .filter(|(_, set)| set.len() == 1)
            .map(|(index, set)| (*index, set.iter().next().cloned().unwrap_or_default()))
            .collect();
        let mut changed = false;
        for (index, node) in &pinned {
            for (other, set) in candidates.iter_mut() {
                if other != index && set.len() > 1 && set.remove(node) {
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut map = BTreeMap::new();
    for (index, set) in candidates {
        if set.len() != 1 {
            return Err(format!("node index {index} is ambiguous: {set:?}"));
        }
        let node = set.into_iter().next().unwrap_or_default();
        if map.values().any(|known| *known == node) {
            return Err(format!("two indices resolve to {node}"));
        }
        map.insert(index, node);
    }
    if let Some(index) = only_in_refs.iter().find(|index| !map.contains_key(index)) {
        return Err(format!(
            "node index {index} appears only in references or ports; no pid pins it"
        ));
    }
    Ok(map)
}

/// Parses a whole trace file (see the module documentation).
pub fn parse_file(name: &str, text: &str) -> Result<TraceFile, String> {
    let node = name
        .split_once(".gproc_dist")
        .or_else(|| name.split_once(".ws"))
        .or_else(|| name.split_once(".sys"))
        .map(|(node, _)| node.to_string())
        .ok_or_else(|| format!("cannot tell the node from the file name {name}"))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut raw_events = Vec::new();
    let mut markers = Vec::new();
    let mut skipped = Vec::new();
    let mut starts = 0usize;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let number = i + 1;
        i += 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("%% ") {
            let (timestamp, text) = rest
                .split_once(' ')
                .ok_or_else(|| format!("line {number}: bad marker"))?;
            let text = text.trim_start_matches("===== ").to_string();
            if text.starts_with("node started") {
                starts += 1;
            }
            markers.push(Marker {
                line: number,
                timestamp: timestamp.to_string(),
                text,
            });
            continue;
        }
        let first = line.split(' ').next().unwrap_or_default();
        if !is_timestamp(first) {
            return Err(format!(
                "line {number}: neither an event nor a marker: {line}"
            ));
        }
        let header = parse_header(line).map_err(|e| format!("line {number}: {e}"))?;
        if header.node != node {
            return Err(format!(
                "line {number}: an event of {} in {node}'s file",
                header.node
            ));
        }
        let mut body = Vec::new();
        let mut legend = Vec::new();
        while i < lines.len() {
            let next = lines[i];
            if let Some(entries) = next.trim_start().strip_prefix("%% pids: ") {
                legend = parse_legend(entries).map_err(|e| format!("line {}: {e}", i + 1))?;
                i += 1;
                break;
            }
            if !next.starts_with("    ") {
                break;
            }
            body.push(next);
            i += 1;
        }
        let raw = body.join("\n");
        if raw.trim().is_empty() {
            return Err(format!("line {number}: an event without a message"));
        }
        let term = match parse_term(&raw, &node) {
            Ok(term) => term,
            Err(ParseError::Fun) => {
                skipped.push((number, "holds a fun".to_string()));
                continue;
            }
            Err(error) => return Err(format!("line {number}: {error} in {raw}")),
        };
        raw_events.push(RawEvent {
            header,
            line: number,
            raw,
            term,
            legend,
            life: starts.saturating_sub(1),
        });
    }
    let lives = starts.max(1);
    let mut node_indices = Vec::new();
    for life in 0..lives {
        let of_life: Vec<&RawEvent> = raw_events.iter().filter(|e| e.life == life).collect();
        node_indices.push(solve_indices(&of_life, &node).map_err(|e| format!("life {life}: {e}"))?);
    }
    let mut events = Vec::new();
    for raw in raw_events {
        let peer =
            parse_peer(&raw.header.peer, &node).map_err(|e| format!("line {}: {e}", raw.line))?;
        let term = resolve(raw.term, &node_indices[raw.life])
            .map_err(|e| format!("line {}: {e}", raw.line))?;
        events.push(Event {
            line: raw.line,
            timestamp: raw.header.timestamp,
            dir: raw.header.dir,
            process: raw.header.process,
            peer,
            term,
            raw: raw.raw,
            legend: raw.legend,
            life: raw.life,
        });
    }
    Ok(TraceFile {
        name: name.to_string(),
        node,
        events,
        markers,
        node_indices,
        skipped,
    })
}
