//! A single-pass capture matcher for the simple, anchored patterns most parser nodes
//! use, with the `regex` crate as the reference and the fallback.
//!
//! The `regex` crate extracts captures of a one-pass pattern with its one-pass DFA,
//! which pays a table step and a slot update for every byte of the line: about a fifth
//! of the nginx lane went there. Most shipped patterns are a chain of literals and
//! greedy runs of a byte class (`^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[...`)
//! where every run ends at a byte that cannot continue it. For those the leftmost-first
//! match (the one the regex reports) can be found by scanning each run to its end and
//! never looking back, with `memchr` for runs that stop at one to three bytes.
//!
//! [`Stepper::new`] accepts a pattern only when that shortcut is exact: it reads the
//! pattern's syntax tree (the same parser and flags as the regex) and checks, for every
//! point where a backtracking matcher could choose (how long a run is, whether an
//! optional group is taken, which alternative is taken), that at most one choice can
//! lead to a match, because the byte after the choice decides it. Anything else
//! (unanchored patterns, lazy or nested repetitions, look-arounds other than `^` at the
//! start and `$`, Unicode classes, overlapping alternatives) is left to the regex. Like
//! the regex, it runs in time linear in the line whatever the line holds. A property
//! test checks it against the regex on every shipped pattern it accepts.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Capture groups (the whole match included) a stepped pattern may have: the slots of
/// one match live on the stack.
pub(crate) const MAX_GROUPS: usize = 24;

/// An unset slot.
const NONE: usize = usize::MAX;

/// The capture positions of one match: start and end of each group, [`NONE`] when the
/// group did not take part.
pub(crate) type Slots = [usize; 2 * MAX_GROUPS];

/// A set of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);

    fn contains(&self, b: u8) -> bool {
        (self.0[usize::from(b >> 6)] >> (b & 63)) & 1 != 0
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn union(self, other: ByteSet) -> ByteSet {
        let mut out = self;
        for (a, b) in out.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        out
    }

    fn intersects(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }

    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The bytes not in the set.
    fn outside(&self) -> Vec<u8> {
        (0..=255u8).filter(|b| !self.contains(*b)).collect()
    }
}

/// How a run finds its end.
#[derive(Debug, Clone)]
enum Stop {
    /// The run is every byte but these: `memchr` finds its end.
    One(u8),
    Two(u8, u8),
    Three(u8, u8, u8),
    /// Byte by byte, against the table.
    Table,
}

impl Stop {
    fn new(set: &ByteSet) -> Stop {
        match set.outside()[..] {
            [a] => Stop::One(a),
            [a, b] => Stop::Two(a, b),
            [a, b, c] => Stop::Three(a, b, c),
            _ => Stop::Table,
        }
    }
}

/// A byte class as a lookup table (one load per byte on the scanning loop).
#[derive(Clone)]
struct Table(Box<[bool; 256]>);

impl Table {
    fn new(set: &ByteSet) -> Table {
        let mut t = Box::new([false; 256]);
        for (b, slot) in t.iter_mut().enumerate() {
            *slot = set.contains(b as u8);
        }
        Table(t)
    }

    fn has(&self, b: u8) -> bool {
        self.0[usize::from(b)]
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Table")
    }
}

/// One step of a compiled pattern.
#[derive(Debug, Clone)]
enum Step {
    /// These bytes, exactly.
    Lit(Box<[u8]>),
    /// A greedy run of `min..=max` bytes of a class.
    Run {
        set: ByteSet,
        table: Table,
        stop: Stop,
        min: usize,
        max: Option<usize>,
    },
    /// `(?:[plain]|<escape>[escaped])*`, greedy: a quoted string with escapes.
    Quoted {
        plain: ByteSet,
        table: Table,
        stop: Stop,
        escape: u8,
        escaped: Table,
    },
    /// A capture group starts (its index) or ends.
    Open(usize),
    Close(usize),
    /// Alternatives, chosen by their first byte (their first bytes never overlap).
    Alt(Vec<(ByteSet, Vec<Step>)>),
    /// A greedy optional group, and the capture groups inside it (unset when skipped).
    Opt(Vec<Step>, Vec<usize>),
    /// `$`: the end of the line.
    End,
}

/// A pattern compiled for single-pass matching (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Stepper {
    steps: Vec<Step>,
}

/// Why a pattern is left to the regex; only for tests and debugging.
type Refusal = &'static str;

impl Stepper {
    /// The stepper for `pattern` (compiled as the parser compiles its regexes: bytes,
    /// Unicode off), or `None` when it is not exactly equivalent to the regex.
    pub(crate) fn new(pattern: &str) -> Option<Stepper> {
        Self::compile(pattern).ok()
    }

    fn compile(pattern: &str) -> Result<Stepper, Refusal> {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(pattern)
            .map_err(|_| "does not parse")?;
        let items: Vec<&Hir> = match hir.kind() {
            HirKind::Concat(items) => items.iter().collect(),
            _ => vec![&hir],
        };
        let Some((first, rest)) = items.split_first() else {
            return Err("empty");
        };
        if !matches!(first.kind(), HirKind::Look(Look::Start)) {
            return Err("not anchored at the start");
        }
        let mut steps = Vec::new();
        for h in rest {
            lower(h, &mut steps)?;
        }
        if groups_in(&steps).iter().any(|g| *g >= MAX_GROUPS) {
            return Err("too many groups");
        }
        // The end of the pattern: the match may stop anywhere, whatever follows.
        check(&steps, Follow { bytes: ByteSet::EMPTY, eoi: false, any: true })?;
        Ok(Stepper { steps })
    }

    /// Matches `hay` from its start; on a match fills `slots` (group 0 is the whole
    /// match) and returns true.
    pub(crate) fn captures(&self, hay: &[u8], slots: &mut Slots) -> bool {
        slots.fill(NONE);
        match run(&self.steps, hay, 0, slots) {
            Some(end) => {
                slots[0] = 0;
                slots[1] = end;
                true
            }
            None => false,
        }
    }
}

/// The span of `group` in `slots`, when it took part in the match.
pub(crate) fn group(slots: &Slots, group: usize) -> Option<(usize, usize)> {
    let start = *slots.get(2 * group)?;
    let end = *slots.get(2 * group + 1)?;
    (start != NONE && end != NONE).then_some((start, end))
}

fn class_set(class: &Class) -> Result<ByteSet, Refusal> {
    let Class::Bytes(bytes) = class else {
        return Err("Unicode class");
    };
    let mut set = ByteSet::EMPTY;
    for r in bytes.ranges() {
        for b in r.start()..=r.end() {
            set.insert(b);
        }
    }
    Ok(set)
}

/// A single-byte literal or a byte class, as a set.
fn single_byte(h: &Hir) -> Option<ByteSet> {
    match h.kind() {
        HirKind::Class(c) => class_set(c).ok(),
        HirKind::Literal(lit) if lit.0.len() == 1 => {
            let mut set = ByteSet::EMPTY;
            set.insert(lit.0[0]);
            Some(set)
        }
        _ => None,
    }
}

fn run_step(set: ByteSet, min: usize, max: Option<usize>) -> Step {
    Step::Run { table: Table::new(&set), stop: Stop::new(&set), set, min, max }
}

/// Appends the steps of `h`.
fn lower(h: &Hir, out: &mut Vec<Step>) -> Result<(), Refusal> {
    match h.kind() {
        HirKind::Empty => {}
        HirKind::Literal(lit) => out.push(Step::Lit(lit.0.clone())),
        HirKind::Class(c) => out.push(run_step(class_set(c)?, 1, Some(1))),
        HirKind::Look(Look::End) => out.push(Step::End),
        HirKind::Look(_) => return Err("look-around other than ^ at the start and $"),
        HirKind::Capture(cap) => {
            let index = cap.index as usize;
            out.push(Step::Open(index));
            lower(&cap.sub, out)?;
            out.push(Step::Close(index));
        }
        HirKind::Concat(items) => {
            for item in items {
                lower(item, out)?;
            }
        }
        HirKind::Alternation(alts) => {
            let mut lowered = Vec::with_capacity(alts.len());
            for alt in alts {
                let mut steps = Vec::new();
                lower(alt, &mut steps)?;
                let (f, nullable) = first(&steps);
                if nullable || f.eoi {
                    return Err("an alternative can match nothing");
                }
                lowered.push((f.bytes, steps));
            }
            out.push(Step::Alt(lowered));
        }
        HirKind::Repetition(rep) => {
            if !rep.greedy {
                return Err("lazy repetition");
            }
            let min = rep.min as usize;
            let max = rep.max.map(|m| m as usize);
            if max == Some(0) {
                return Err("empty repetition");
            }
            if let Some(set) = single_byte(&rep.sub) {
                out.push(run_step(set, min, max));
            } else if let (0, None, Some(q)) = (min, max, quoted(&rep.sub)) {
                out.push(q);
            } else if (min, max) == (0, Some(1)) {
                let mut body = Vec::new();
                lower(&rep.sub, &mut body)?;
                let groups = groups_in(&body);
                out.push(Step::Opt(body, groups));
            } else {
                return Err("repetition of something other than a byte class");
            }
        }
    }
    Ok(())
}

/// `[plain]|<escape>[escaped]` (either order), as a [`Step::Quoted`].
fn quoted(h: &Hir) -> Option<Step> {
    let HirKind::Alternation(alts) = h.kind() else {
        return None;
    };
    let [a, b] = &alts[..] else {
        return None;
    };
    let escaped_pair = |h: &Hir| -> Option<(u8, ByteSet)> {
        let HirKind::Concat(items) = h.kind() else {
            return None;
        };
        let [e, c] = &items[..] else {
            return None;
        };
        let HirKind::Literal(lit) = e.kind() else {
            return None;
        };
        let [escape] = lit.0[..] else {
            return None;
        };
        Some((escape, single_byte(c)?))
    };
    let (plain, (escape, escaped)) = match (single_byte(a), single_byte(b)) {
        (Some(p), None) => (p, escaped_pair(b)?),
        (None, Some(p)) => (p, escaped_pair(a)?),
        _ => return None,
    };
    // Each unit must be recognisable from its first byte: a line then splits into units
    // one way only.
    if plain.contains(escape) {
        return None;
    }
    Some(Step::Quoted {
        table: Table::new(&plain),
        stop: Stop::new(&plain),
        plain,
        escape,
        escaped: Table::new(&escaped),
    })
}

fn groups_in(steps: &[Step]) -> Vec<usize> {
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::Open(g) => out.push(*g),
            Step::Alt(alts) => alts.iter().for_each(|(_, body)| out.extend(groups_in(body))),
            Step::Opt(_, groups) => out.extend(groups),
            _ => {}
        }
    }
    out
}

/// What can come next at some point of a pattern.
#[derive(Debug, Clone, Copy)]
struct Follow {
    /// Bytes the rest can start with.
    bytes: ByteSet,
    /// The rest can match at the end of the line (`$`).
    eoi: bool,
    /// The rest matches nothing and needs nothing: any input is fine.
    any: bool,
}

/// What `steps` can start with, and whether they can match the empty string without a
/// `$` (then what follows them can come first).
fn first(steps: &[Step]) -> (Follow, bool) {
    let mut f = Follow { bytes: ByteSet::EMPTY, eoi: false, any: false };
    for s in steps {
        match s {
            Step::Lit(l) => {
                if let Some(&b) = l.first() {
                    f.bytes.insert(b);
                    return (f, false);
                }
            }
            Step::Run { set, min, .. } => {
                f.bytes = f.bytes.union(*set);
                if *min > 0 {
                    return (f, false);
                }
            }
            Step::Quoted { plain, escape, .. } => {
                f.bytes = f.bytes.union(*plain);
                f.bytes.insert(*escape);
            }
            Step::Open(_) | Step::Close(_) => {}
            Step::Alt(alts) => {
                for (set, _) in alts {
                    f.bytes = f.bytes.union(*set);
                }
                // Alternatives never match nothing (refused when lowered).
                return (f, false);
            }
            Step::Opt(body, _) => {
                let (b, _) = first(body);
                f.bytes = f.bytes.union(b.bytes);
                f.eoi |= b.eoi;
            }
            Step::End => {
                f.eoi = true;
                return (f, false);
            }
        }
    }
    (f, true)
}

/// What can come after `steps[i]`: the start of `steps[i + 1..]`, then `k` when those
/// can match nothing.
fn follow(steps: &[Step], k: Follow) -> Follow {
    let (f, nullable) = first(steps);
    if nullable {
        Follow { bytes: f.bytes.union(k.bytes), eoi: f.eoi || k.eoi, any: k.any }
    } else {
        f
    }
}

/// Checks that every choice in `steps`, followed by `k`, is decided by the next byte.
fn check(steps: &[Step], k: Follow) -> Result<(), Refusal> {
    for (i, s) in steps.iter().enumerate() {
        let after = follow(&steps[i + 1..], k);
        match s {
            Step::Run { set, min, max, .. } => {
                // The longest run is the only one that can go on: a shorter one stops
                // at a byte of the class, which what follows cannot start with. (When
                // what follows needs nothing, the longest run matches and is preferred.)
                // A run of a fixed length (`[A-Z]`, `[0-9]{3}`) has no choice to make.
                if *max != Some(*min) && !after.any && set.intersects(&after.bytes) {
                    return Err("a run is followed by a byte of its own class");
                }
            }
            Step::Quoted { plain, escape, .. } => {
                let mut starts = *plain;
                starts.insert(*escape);
                if !after.any && starts.intersects(&after.bytes) {
                    return Err("a quoted string is followed by a byte that can continue it");
                }
            }
            Step::Alt(alts) => {
                for (n, (set, body)) in alts.iter().enumerate() {
                    if alts[..n].iter().any(|(other, _)| other.intersects(set)) {
                        return Err("alternatives that can start with the same byte");
                    }
                    check(body, after)?;
                }
            }
            Step::Opt(body, _) => {
                let (f, nullable) = first(body);
                if nullable || f.eoi || f.bytes.is_empty() {
                    return Err("an optional group that can match nothing");
                }
                // Taken when it matches: skipping it would leave a byte it starts with,
                // which what follows cannot start with.
                if !after.any && f.bytes.intersects(&after.bytes) {
                    return Err("an optional group is followed by what it can start with");
                }
                check(body, after)?;
            }
            Step::Lit(_) | Step::Open(_) | Step::Close(_) | Step::End => {}
        }
    }
    Ok(())
}

/// The end of the run of `table`'s bytes starting at `pos`, at most `limit`.
fn scan(table: &Table, stop: &Stop, hay: &[u8], pos: usize, limit: usize) -> usize {
    let Some(window) = hay.get(pos..limit) else {
        return pos;
    };
    let found = match *stop {
        Stop::One(a) => memchr::memchr(a, window),
        Stop::Two(a, b) => memchr::memchr2(a, b, window),
        Stop::Three(a, b, c) => memchr::memchr3(a, b, c, window),
        Stop::Table => window.iter().position(|&b| !table.has(b)),
    };
    pos + found.unwrap_or(window.len())
}

/// Runs `steps` from `pos`; the end of the match, or `None`.
fn run(steps: &[Step], hay: &[u8], mut pos: usize, slots: &mut Slots) -> Option<usize> {
    for s in steps {
        match s {
            Step::Lit(l) => {
                let end = pos.checked_add(l.len())?;
                if hay.get(pos..end)? != &**l {
                    return None;
                }
                pos = end;
            }
            Step::Run { table, stop, min, max, .. } => {
                let limit = match max {
                    Some(m) => pos.saturating_add(*m).min(hay.len()),
                    None => hay.len(),
                };
                let end = scan(table, stop, hay, pos, limit);
                if end - pos < *min {
                    return None;
                }
                pos = end;
            }
            Step::Quoted { table, stop, escape, escaped, .. } => loop {
                pos = scan(table, stop, hay, pos, hay.len());
                match (hay.get(pos), hay.get(pos + 1)) {
                    (Some(e), Some(&next)) if e == escape && escaped.has(next) => pos += 2,
                    _ => break,
                }
            },
            Step::Open(g) => *slots.get_mut(2 * g)? = pos,
            Step::Close(g) => *slots.get_mut(2 * g + 1)? = pos,
            Step::Alt(alts) => {
                let b = *hay.get(pos)?;
                let (_, body) = alts.iter().find(|(set, _)| set.contains(b))?;
                pos = run(body, hay, pos, slots)?;
            }
            Step::Opt(body, groups) => match run(body, hay, pos, slots) {
                Some(end) => pos = end,
                None => {
                    for g in groups {
                        if let Some(pair) = slots.get_mut(2 * g..2 * g + 2) {
                            pair.fill(NONE);
                        }
                    }
                }
            },
            Step::End => {
                if pos != hay.len() {
                    return None;
                }
            }
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::bytes::{Regex, RegexBuilder};

    const ACCESS: &str = r#"^(?P<remote_addr>\S+) - (?P<remote_user>\S+) \[(?P<time_local>[^\]]*)\] "(?P<request_line>(?:[^"\\]|\\.)*)" (?P<status>[0-9]{3}) (?:(?P<body_bytes_sent>[0-9]+)|-)(?: "(?P<http_referer>(?:[^"\\]|\\.)*)" "(?P<http_user_agent>(?:[^"\\]|\\.)*)")?"#;
    const REQUEST: &str = r#"^(?P<verb>[A-Z][A-Z_-]*) (?P<request>\S+)(?: HTTP/(?P<http_version>[0-9.]+))?$"#;

    fn regex(p: &str) -> Regex {
        RegexBuilder::new(p).unicode(false).build().expect("regex")
    }

    /// The stepper's groups, as the regex reports them.
    fn stepped(s: &Stepper, groups: usize, hay: &[u8]) -> Option<Vec<Option<(usize, usize)>>> {
        let mut slots = [0; 2 * MAX_GROUPS];
        s.captures(hay, &mut slots).then(|| (0..groups).map(|g| group(&slots, g)).collect())
    }

    fn reference(re: &Regex, hay: &[u8]) -> Option<Vec<Option<(usize, usize)>>> {
        let mut locs = re.capture_locations();
        re.captures_read(&mut locs, hay)?;
        Some((0..locs.len()).map(|g| locs.get(g)).collect())
    }

    /// Asserts the stepper and the regex agree on `hay`.
    pub(crate) fn agree(pattern: &str, hay: &[u8]) {
        let Some(s) = Stepper::new(pattern) else { return };
        let re = regex(pattern);
        assert_eq!(
            stepped(&s, re.captures_len(), hay),
            reference(&re, hay),
            "pattern {pattern:?} on {:?}",
            String::from_utf8_lossy(hay)
        );
    }

    #[test]
    fn accepts_the_nginx_patterns() {
        for p in [ACCESS, REQUEST] {
            if let Err(why) = Stepper::compile(p) {
                panic!("{p}: {why}");
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_decide() {
        for p in [
            r"(?P<a>\S+) x",            // unanchored
            r"^(?P<a>\S+)\S",           // run followed by its own class
            r"^(?P<a>[0-9]{1,3})[0-9]", // bounded run followed by its own class
            r"^(?P<a>.*) (?P<b>x)",     // `.` includes the space
            r"^(?P<a>\S+?) ",           // lazy
            r"^(?:[ab]x|[bc]y)",        // alternatives with one first byte
            r"^(?:(?P<a>x) )?x",        // optional group followed by its first byte
            r"^(?:ab)+",                // repetition of a sequence
            r"^\bx",                    // look-around
            r"^(?u:\w)+",               // Unicode class
            r#"^"(?:[^"]|")*""#,        // quoted string whose escape is a plain byte
        ] {
            assert!(Stepper::compile(p).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn agrees_on_examples() {
        let lines: &[&[u8]] = &[
            br#"1.2.3.4 - - [25/Nov/2026:06:00:17 +0000] "GET /x HTTP/1.1" 200 512 "-" "curl/8""#,
            br#"1.2.3.4 - - [25/Nov/2026:06:00:17 +0000] "GET /x HTTP/1.1" 200 - "-" "curl/8" extra"#,
            br#"1.2.3.4 - - [25/Nov/2026:06:00:17 +0000] "GET /x HTTP/1.1" 200 512"#,
            br#"1.2.3.4 - - [25/Nov/2026:06:00:17 +0000] "GET /x HTTP/1.1" 200 512 "-" "#,
            br#"1.2.3.4 - - [25/Nov/2026:06:00:17 +0000] "a \" b \\" 400 0 "r\"" "u\\\"x""#,
            br#"1.2.3.4 - - [] "\" 400 0"#,
            b"1.2.3.4 - - [x] \"\\\n\" 400 0",
            br#"1.2.3.4 - - [x] "" 40 0"#,
            br#"1.2.3.4  - - [x] "" 400 0"#,
            b"",
            b"GET /x HTTP/1.1",
            b"GET /x HTTP/1.1 ",
            b"GET /x",
            b"GET /x HTTP/",
            b"G-_ /x HTTP/..",
            b"get /x",
        ];
        for l in lines {
            agree(ACCESS, l);
            agree(REQUEST, l);
        }
    }

    /// Lines made of the bytes the patterns care about, so that near misses are common.
    fn arb_line() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b" ".to_vec()),
            Just(b" - ".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"[".to_vec()),
            Just(b"]".to_vec()),
            Just(b"-".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"HTTP/".to_vec()),
            Just(b"GET".to_vec()),
            Just(b"1.1".to_vec()),
            Just(b"200".to_vec()),
            "[0-9]{1,4}".prop_map(String::into_bytes),
            "[a-zA-Z/._:]{1,6}".prop_map(String::into_bytes),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    /// A valid access line with one random edit, so that most cases get far.
    fn arb_access_line() -> impl Strategy<Value = Vec<u8>> {
        let base: &[u8] = br#"10.0.0.1 - bob [25/Nov/2026:06:00:17 +0000] "GET /a?b=\"c\" HTTP/1.1" 404 153 "http://r/" "Mozilla/5.0 (X11) \\o/""#;
        (0..base.len(), 0..base.len() + 1, arb_line()).prop_map(move |(from, to, insert)| {
            let (from, to) = (from.min(to), from.max(to).min(base.len()));
            [&base[..from], &insert[..], &base[to..]].concat()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_the_regex_on_nginx_lines(line in arb_access_line()) {
            agree(ACCESS, &line);
            agree(REQUEST, &line);
        }

        #[test]
        fn agrees_with_the_regex_on_random_lines(line in arb_line()) {
            agree(ACCESS, &line);
            agree(REQUEST, &line);
        }
    }
}
