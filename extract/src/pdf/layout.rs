//! Layout: characters → words → lines → blocks → reading order, the way
//! poppler's text output builds them (its word-break, duplicate and
//! inter-word spacing rules; line-end hyphens joined), with a bounding box
//! per line.

use std::collections::HashMap;

use unicode_normalization::char::is_combining_mark;

use super::content::{is_rtl, Char};

/// A gap wider than this fraction of the font size starts a new word.
const WORD_BREAK_SPACE: f64 = 0.1;
/// An overlap deeper than this fraction starts a new word.
const DUP_BREAK_OVERLAP: f64 = 0.2;
/// Duplicated text (fake bold, drop shadows): along / across the baseline.
const DUP_MAX_PRI: f64 = 0.1;
const DUP_MAX_SEC: f64 = 0.2;
/// A combining mark joins the character before it when their centres are
/// this close (along the line) and their baselines this close (fractions
/// of the font size).
const COMB_MAX_MID: f64 = 0.3;
const COMB_MAX_BASE: f64 = 0.4;
/// Baselines closer than this (points) stay in one word.
const MAX_BASE_DELTA: f64 = 0.5;
/// Words on one line: baselines within this fraction of the font size.
const MAX_INTRA_LINE_DELTA: f64 = 0.5;
/// Words of one line overlap along it by at most this fraction of the
/// smaller font size.
const MAX_LINE_OVERLAP: f64 = 0.3;
/// Inter-word space threshold, and the wide-spacing (letter-spaced) rule.
const MAX_CHAR_SPACING: f64 = 0.03;
const MAX_WIDE_CHAR_SPACING_MUL: f64 = 1.3;
const MAX_WIDE_CHAR_SPACING: f64 = 0.4;
/// A horizontal gap wider than this splits a line into two columns.
const MIN_COLUMN_GAP: f64 = 1.0;
/// Lines of one block: baselines at most this many font sizes apart.
const MAX_LINE_SPACING: f64 = 1.5;
/// Font sizes of lines in one block differ by at most this fraction.
const MAX_BLOCK_SIZE_DELTA: f64 = 0.6;
/// A block takes in pieces of its lines this close to its sides
/// (fraction of the font size; poppler's `minColSpacing1`).
const MIN_COLUMN_OVERLAP: f64 = 0.3;
/// Rounds of [`absorb`] at most.
const MAX_ABSORB_ROUNDS: usize = 8;
/// Above this many blocks a page is ordered by position only.
const MAX_ORDERED_BLOCKS: usize = 3000;

/// A line of text with its box `[x0, y0, x1, y1]` (points, top-left origin).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub(crate) text: String,
    pub(crate) bbox: [f64; 4],
    /// Font size of its first word.
    pub(crate) size: f64,
    /// Nearly all of its characters are in a bold face.
    pub(crate) bold: bool,
}

/// Lines that belong together (a paragraph, a cell, a heading).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Block {
    pub(crate) lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct Word {
    text: String,
    /// Primary axis extent (along the text direction).
    p0: f64,
    p1: f64,
    base: f64,
    size: f64,
    rot: u8,
    len: usize,
    /// How many of its characters are bold.
    bold: usize,
    last_edge: f64,
    last_width: f64,
}

/// (primary, secondary) of a point for a text direction: primary grows
/// along the text, secondary from one line to the next.
fn axes(rot: u8, x: f64, y: f64) -> (f64, f64) {
    match rot {
        1 => (y, -x),
        2 => (-x, -y),
        3 => (-y, x),
        _ => (x, y),
    }
}

fn from_axes(rot: u8, p: f64, s: f64) -> (f64, f64) {
    match rot {
        1 => (-s, p),
        2 => (-p, -s),
        3 => (s, -p),
        _ => (p, s),
    }
}

fn words(chars: &[Char]) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    let mut cur: Option<Word> = None;
    let mut last_overlap = false;
    for c in chars {
        let (mut p, s) = axes(c.rot, c.x, c.y);
        let (mut w, _) = axes(c.rot, c.dx, c.dy);
        let reversed = w < 0.0;
        if reversed {
            p += w;
            w = -w;
        }
        if c.ch.is_whitespace() {
            out.extend(cur.take());
            last_overlap = false;
            continue;
        }
        if c.ch == '\0' {
            continue;
        }
        // A combining mark (Thai vowels, Arabic and Hebrew points, accents
        // drawn apart) belongs to the character before it, wherever it is drawn.
        // poppler's test: the two centres within 0.3 em, baselines within 0.4 em.
        if let Some(word) = cur.as_mut().filter(|wd| {
            is_combining_mark(c.ch)
                && ((p + w / 2.0) - (wd.last_edge + wd.last_width / 2.0)).abs()
                    < COMB_MAX_MID * wd.size
                && (s - wd.base).abs() < COMB_MAX_BASE * wd.size
        }) {
            word.text.push(c.ch);
            continue;
        }
        if let Some(word) = &cur {
            let sp = p - word.p1;
            let delta = p - word.last_edge;
            let overlap = delta.abs() < DUP_MAX_PRI * word.size
                && (s - word.base).abs() < DUP_MAX_SEC * word.size;
            if reversed
                || overlap
                || last_overlap
                || word.rot != c.rot
                || sp < -DUP_BREAK_OVERLAP * word.size
                || sp > WORD_BREAK_SPACE * word.size
                || (s - word.base).abs() > MAX_BASE_DELTA
                || (c.size - word.size).abs() > 1e-3 * word.size
            {
                out.extend(cur.take());
            }
            last_overlap = overlap;
        } else {
            last_overlap = false;
        }
        match &mut cur {
            Some(word) => {
                word.text.push(c.ch);
                word.p1 = word.p1.max(p + w);
                word.last_edge = p;
                word.last_width = w;
                word.len += 1;
                word.bold += usize::from(c.bold);
            }
            None => {
                cur = Some(Word {
                    text: c.ch.to_string(),
                    p0: p,
                    p1: p + w,
                    base: s,
                    size: c.size,
                    rot: c.rot,
                    len: 1,
                    bold: usize::from(c.bold),
                    last_edge: p,
                    last_width: w,
                });
            }
        }
        if reversed {
            out.extend(cur.take());
        }
    }
    out.extend(cur);
    out
}

/// Drops words drawn twice at (nearly) the same place with the same text.
fn drop_duplicates(words: Vec<Word>) -> Vec<Word> {
    let mut kept: Vec<Word> = Vec::with_capacity(words.len());
    let mut by_text: HashMap<(String, u8), Vec<usize>> = HashMap::new();
    for w in words {
        let key = (w.text.clone(), w.rot);
        let seen = by_text.entry(key).or_default();
        let dup = seen.iter().any(|&i| {
            let k = &kept[i];
            (k.p0 - w.p0).abs() < DUP_MAX_PRI * k.size
                && (k.p1 - w.p1).abs() < DUP_MAX_PRI * k.size
                && (k.base - w.base).abs() < DUP_MAX_SEC * k.size
        });
        if !dup && seen.len() < 64 {
            seen.push(kept.len());
            kept.push(w);
        } else if !dup {
            kept.push(w);
        }
    }
    kept
}

/// `a` and `b` are drawn over each other (overlap along the line by more
/// than [`MAX_LINE_OVERLAP`] em): not words of one line.
fn overprint(a: &Word, b: &Word) -> bool {
    a.p1.min(b.p1) - a.p0.max(b.p0) > MAX_LINE_OVERLAP * a.size.min(b.size)
}

/// One column segment of a line: words left to right.
struct Segment {
    words: Vec<Word>,
}

impl Segment {
    /// Some word of `other` overlaps one of these along the line (see
    /// [`MAX_LINE_OVERLAP`]).
    fn overprints(&self, other: &Segment) -> bool {
        other.p0() < self.p1()
            && self.p0() < other.p1()
            && self
                .words
                .iter()
                .any(|x| other.words.iter().any(|w| overprint(x, w)))
    }
    fn p0(&self) -> f64 {
        self.words.first().map_or(0.0, |w| w.p0)
    }
    fn p1(&self) -> f64 {
        self.words.iter().map(|w| w.p1).fold(f64::MIN, f64::max)
    }
    fn base(&self) -> f64 {
        self.words.first().map_or(0.0, |w| w.base)
    }
    fn size(&self) -> f64 {
        self.words.first().map_or(1.0, |w| w.size)
    }

    /// The text with poppler's inter-word spacing rule.
    fn text(&self) -> String {
        let words = &self.words;
        let size = self.size();
        let mut min_space = f64::MAX;
        let single = words.len() > 1 && words.iter().all(|w| w.len == 1);
        if single {
            for pair in words.windows(2) {
                min_space = min_space.min(pair[1].p0 - pair[0].p1);
            }
        }
        let space = if single && min_space > 0.0 {
            (MAX_WIDE_CHAR_SPACING_MUL * min_space).min(MAX_WIDE_CHAR_SPACING * size)
        } else {
            MAX_CHAR_SPACING * size
        };
        let mut out = String::new();
        for (k, w) in words.iter().enumerate() {
            if k > 0 && w.p0 - words[k - 1].p1 >= space {
                out.push(' ');
            }
            out.push_str(&w.text);
        }
        out
    }

    fn line(&self, rot: u8, primary_lr: bool) -> Line {
        let size = self.size();
        let (top, bottom) = self.words.iter().fold((f64::MAX, f64::MIN), |(t, b), w| {
            (t.min(w.base - 0.8 * w.size), b.max(w.base + 0.2 * w.size))
        });
        let (xa, ya) = from_axes(rot, self.p0(), top);
        let (xb, yb) = from_axes(rot, self.p1(), bottom);
        let r = |v: f64| (v * 100.0).round() / 100.0;
        let (bold, len) = self
            .words
            .iter()
            .fold((0, 0), |(b, n), w| (b + w.bold, n + w.len));
        Line {
            text: reorder(&self.text(), primary_lr),
            bbox: [r(xa.min(xb)), r(ya.min(yb)), r(xa.max(xb)), r(ya.max(yb))],
            size,
            bold: bold * 10 >= len * 9,
        }
    }
}

/// Words of one direction into line segments.
fn segments(mut words: Vec<Word>) -> Vec<Segment> {
    words.sort_by(|a, b| a.base.total_cmp(&b.base).then(a.p0.total_cmp(&b.p0)));
    let mut lines: Vec<Vec<Word>> = Vec::new();
    // The right end of each line so far.
    let mut ends: Vec<f64> = Vec::new();
    for w in words {
        // The latest line whose baseline is close and none of whose words
        // this one overprints (two captions drawn over each other at
        // nearby baselines are two lines, as in poppler).
        let mut home = None;
        for (i, line) in lines.iter().enumerate().rev() {
            if (w.base - line[0].base).abs()
                >= MAX_INTRA_LINE_DELTA * line[0].size.min(w.size).max(0.1)
            {
                break;
            }
            // Words come by baseline, then left to right: most start past
            // the line's end, and only the others are compared.
            let overlaps = w.p0 < ends[i] && line.iter().any(|x| overprint(x, &w));
            if !overlaps {
                home = Some(i);
                break;
            }
        }
        match home {
            Some(i) => {
                ends[i] = ends[i].max(w.p1);
                lines[i].push(w);
            }
            None => {
                ends.push(w.p1);
                lines.push(vec![w]);
            }
        }
    }
    let mut out = Vec::new();
    for mut line in lines {
        line.sort_by(|a, b| a.p0.total_cmp(&b.p0));
        let mut seg: Vec<Word> = Vec::new();
        for w in line {
            if let Some(prev) = seg.last() {
                let gap = w.p0 - seg.iter().map(|x| x.p1).fold(f64::MIN, f64::max);
                if gap > MIN_COLUMN_GAP * prev.size.max(w.size) {
                    out.push(Segment {
                        words: std::mem::take(&mut seg),
                    });
                }
            }
            seg.push(w);
        }
        if !seg.is_empty() {
            out.push(Segment { words: seg });
        }
    }
    out
}

struct RawBlock {
    segs: Vec<Segment>,
    p0: f64,
    p1: f64,
    top: f64,
    bottom: f64,
}

impl RawBlock {
    /// Adds a segment: to the line it shares a baseline with (its words
    /// merged left to right), else as a line of its own.
    /// Segments must come by baseline: only the lines at the end, within
    /// a baseline delta, are looked at.
    fn add(&mut self, seg: Segment) {
        let reach = MAX_INTRA_LINE_DELTA * seg.size();
        for line in self.segs.iter_mut().rev() {
            if seg.base() - line.base() >= reach {
                break;
            }
            if (line.base() - seg.base()).abs() < MAX_INTRA_LINE_DELTA * line.size().min(seg.size())
                && !line.overprints(&seg)
            {
                line.words.extend(seg.words);
                line.words.sort_by(|x, y| x.p0.total_cmp(&y.p0));
                return;
            }
        }
        self.segs.push(seg);
    }
}

fn blocks(segs: Vec<Segment>) -> Vec<RawBlock> {
    let mut out: Vec<RawBlock> = Vec::new();
    // Segments come sorted by baseline, then left to right.
    for seg in segs {
        let (p0, p1, base, size) = (seg.p0(), seg.p1(), seg.base(), seg.size());
        let mut best: Option<(usize, f64)> = None;
        for (i, b) in out.iter().enumerate().rev() {
            let Some(last) = b.segs.last() else { continue };
            let gap = base - last.base();
            if gap > MAX_LINE_SPACING * size.max(last.size()) * 2.0 {
                continue;
            }
            let similar =
                (size - last.size()).abs() <= MAX_BLOCK_SIZE_DELTA * size.max(last.size());
            // Another piece of the block's last line (cut off by a wide
            // gap) that the block's width covers joins that line.
            let same_line = gap.abs() < MAX_INTRA_LINE_DELTA * size.min(last.size())
                && p0 < b.p1 + MIN_COLUMN_OVERLAP * size
                && p1 > b.p0 - MIN_COLUMN_OVERLAP * size;
            let gap = if same_line { 0.0 } else { gap };
            let fits = similar
                && (same_line
                    || gap > 0.0
                        && gap <= MAX_LINE_SPACING * size.max(last.size())
                        && p0 < b.p1
                        && p1 > b.p0);
            if fits && best.is_none_or(|(_, g)| gap < g) {
                best = Some((i, gap));
            }
        }
        match best {
            Some((i, _)) => {
                let b = &mut out[i];
                b.p0 = b.p0.min(p0);
                b.p1 = b.p1.max(p1);
                b.bottom = b.bottom.max(base);
                b.add(seg);
            }
            None => out.push(RawBlock {
                p0,
                p1,
                top: base - size,
                bottom: base,
                segs: vec![seg],
            }),
        }
    }
    order(absorb(out))
}

/// poppler's blocks take in the words on their own lines that overlap
/// them: a piece of a line cut off by a wide gap (a justified line, the
/// first line of a paragraph read before the lines that span it) joins
/// the block whose lines it sits on and whose width covers it, and its
/// segments join the lines they share a baseline with.
fn absorb(mut blocks: Vec<RawBlock>) -> Vec<RawBlock> {
    if blocks.len() > MAX_ORDERED_BLOCKS {
        return blocks;
    }
    let first_base = |b: &RawBlock| b.segs.first().map_or(0.0, Segment::base);
    let mut merged = true;
    let mut rounds = 0;
    while merged && rounds < MAX_ABSORB_ROUNDS {
        merged = false;
        rounds += 1;
        let mut i = 0;
        while i < blocks.len() {
            let b = &blocks[i];
            let size = b.segs.first().map_or(1.0, Segment::size);
            let slack = MAX_INTRA_LINE_DELTA * size;
            let (lo, hi) = (first_base(b) - slack, b.bottom + slack);
            let (p0, p1) = (
                b.p0 - MIN_COLUMN_OVERLAP * size,
                b.p1 + MIN_COLUMN_OVERLAP * size,
            );
            let taken = (0..blocks.len()).find(|&j| {
                let a = &blocks[j];
                j != i
                    && a.segs.len() < b.segs.len().max(2)
                    && first_base(a) >= lo
                    && a.bottom <= hi
                    && a.p0 < p1
                    && a.p1 > p0
                    && a.segs
                        .iter()
                        .all(|s| (s.size() - size).abs() <= MAX_BLOCK_SIZE_DELTA * size)
            });
            let Some(j) = taken else {
                i += 1;
                continue;
            };
            let a = blocks.remove(j);
            let i = if j < i { i - 1 } else { i };
            let b = &mut blocks[i];
            b.p0 = b.p0.min(a.p0);
            b.p1 = b.p1.max(a.p1);
            b.top = b.top.min(a.top);
            b.bottom = b.bottom.max(a.bottom);
            // Both blocks' segments again, by baseline, through `add`.
            let mut segs = std::mem::take(&mut b.segs);
            segs.extend(a.segs);
            segs.sort_by(|x, y| {
                x.base()
                    .total_cmp(&y.base())
                    .then(x.p0().total_cmp(&y.p0()))
            });
            for seg in segs {
                b.add(seg);
            }
            merged = true;
        }
    }
    blocks
}

/// Reading order: a block comes after every block above it that it
/// overlaps horizontally and after every block wholly to its left that
/// shares its rows; ties go top to bottom, then left to right.
fn order(blocks: Vec<RawBlock>) -> Vec<RawBlock> {
    let n = blocks.len();
    let key = |b: &RawBlock| (b.top, b.p0);
    if !(2..=MAX_ORDERED_BLOCKS).contains(&n) {
        let mut blocks = blocks;
        blocks.sort_by(|a, b| {
            key(a)
                .0
                .total_cmp(&key(b).0)
                .then(key(a).1.total_cmp(&key(b).1))
        });
        return blocks;
    }
    let before = |a: &RawBlock, b: &RawBlock| -> bool {
        let h_overlap = a.p0 < b.p1 && b.p0 < a.p1;
        let v_overlap = a.top < b.bottom && b.top < a.bottom;
        (h_overlap && a.bottom <= b.top + 1.0 && a.top < b.top) || (a.p1 <= b.p0 && v_overlap)
    };
    let mut indegree = vec![0usize; n];
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && before(&blocks[i], &blocks[j]) {
                next[i].push(j);
                indegree[j] += 1;
            }
        }
    }
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        // The ready block first in position; a cycle (overlapping boxes)
        // is broken by taking the first remaining one.
        let pick = (0..n)
            .filter(|&i| !done[i] && indegree[i] == 0)
            .min_by(|&a, &b| {
                key(&blocks[a])
                    .0
                    .total_cmp(&key(&blocks[b]).0)
                    .then(key(&blocks[a]).1.total_cmp(&key(&blocks[b]).1))
            })
            .or_else(|| {
                (0..n)
                    .filter(|&i| !done[i])
                    .min_by(|&a, &b| key(&blocks[a]).0.total_cmp(&key(&blocks[b]).0))
            });
        let Some(i) = pick else { break };
        done[i] = true;
        order.push(i);
        for &j in &next[i] {
            indegree[j] = indegree[j].saturating_sub(1);
        }
    }
    let mut slots: Vec<Option<RawBlock>> = blocks.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Left-to-right letters.
    L,
    /// Right-to-left letters (Hebrew, Arabic, Syriac, Thaana, N'Ko).
    R,
    Num,
    Other,
}

fn class(c: char) -> Class {
    if is_rtl(c) {
        Class::R
    } else if c.is_numeric() || matches!(c, '#' | '$' | '%' | '+' | ',' | '-' | '.' | '/' | ':') {
        // Numbers and the signs that go with them, as Unicode's European
        // and common number separators (and poppler's table) class them.
        Class::Num
    } else if c.is_alphabetic() {
        Class::L
    } else {
        Class::Other
    }
}

/// Visual order (as drawn, left to right) to logical order, as poppler
/// writes it: on a left-to-right page each right-to-left run is reversed;
/// on a right-to-left page the line is read from its right end, its
/// left-to-right runs (letters and numbers) kept as they are. Unlike
/// poppler, white space closing a run stays where it separates words.
fn reorder(visual: &str, primary_lr: bool) -> String {
    let text: Vec<char> = visual.chars().collect();
    if !text.iter().any(|&c| class(c) == Class::R) {
        return visual.to_string();
    }
    let ltr = |c: char| matches!(class(c), Class::L | Class::Num);
    let mut out = String::with_capacity(visual.len());
    if primary_lr {
        let mut i = 0;
        while i < text.len() {
            let j = (i..text.len())
                .find(|&k| class(text[k]) == Class::R)
                .unwrap_or(text.len());
            out.extend(&text[i..j]);
            let k = (j..text.len())
                .find(|&k| ltr(text[k]))
                .unwrap_or(text.len());
            // White space at the run's end stays between it and what follows.
            let core = (j..k)
                .rev()
                .find(|&e| !text[e].is_whitespace())
                .map_or(j, |e| e + 1);
            out.extend(text[j..core].iter().rev());
            out.extend(&text[core..k]);
            i = k;
        }
    } else {
        let mut i = text.len();
        while i > 0 {
            // A right-to-left run, read from its right end…
            let j = (0..i).rev().find(|&k| ltr(text[k])).map_or(0, |k| k + 1);
            out.extend(text[j..i].iter().rev());
            // …then a left-to-right run, read forwards.
            let k = (0..j)
                .rev()
                .find(|&k| class(text[k]) == Class::R)
                .map_or(0, |k| k + 1);
            out.extend(&text[k..j]);
            i = k;
        }
    }
    out
}

/// Lays out a page's characters into blocks of lines in reading order.
pub(crate) fn layout(chars: &[Char]) -> Vec<Block> {
    let all = drop_duplicates(words(chars));
    let mut by_rot: [Vec<Word>; 4] = Default::default();
    for w in all {
        let r = usize::from(w.rot.min(3));
        by_rot[r].push(w);
    }
    let lr: i64 = chars
        .iter()
        .map(|c| match class(c.ch) {
            Class::L => 1,
            Class::R => -1,
            _ => 0,
        })
        .sum();
    let primary_lr = lr >= 0;
    // The direction with the most text first.
    let mut rots: Vec<u8> = (0..4u8)
        .filter(|&r| !by_rot[usize::from(r)].is_empty())
        .collect();
    rots.sort_by_key(|&r| {
        std::cmp::Reverse(by_rot[usize::from(r)].iter().map(|w| w.len).sum::<usize>())
    });
    let mut out = Vec::new();
    for rot in rots {
        let words = std::mem::take(&mut by_rot[usize::from(rot)]);
        for b in blocks(segments(words)) {
            out.push(Block {
                lines: b.segs.iter().map(|s| s.line(rot, primary_lr)).collect(),
            });
        }
    }
    out
}

/// The page text: lines joined by newlines, blocks by blank lines, and a
/// line ending in a hyphen joined to the next line without it (as
/// pdftotext does).
pub(crate) fn text(blocks: &[Block]) -> String {
    let lines: Vec<(&str, bool)> = blocks
        .iter()
        .flat_map(|b| {
            b.lines
                .iter()
                .enumerate()
                .map(|(k, l)| (l.text.as_str(), k == 0))
        })
        .collect();
    let mut out = String::new();
    let mut join = false;
    for (i, &(t, first)) in lines.iter().enumerate() {
        if i > 0 && !join {
            out.push('\n');
            if first {
                out.push('\n');
            }
        }
        join = t.ends_with('-') && i + 1 < lines.len();
        out.push_str(if join { &t[..t.len() - 1] } else { t });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(text: &str, x: f64, y: f64, size: f64, advance: f64) -> Vec<Char> {
        text.chars()
            .enumerate()
            .map(|(k, ch)| Char {
                ch,
                x: x + k as f64 * advance,
                y,
                dx: advance,
                dy: 0.0,
                size,
                rot: 0,
                bold: false,
            })
            .collect()
    }

    #[test]
    fn right_to_left_runs_read_in_logical_order() {
        // Drawn left to right: "םולש" is שלום.
        assert_eq!(
            reorder("\u{5DD}\u{5D5}\u{5DC}\u{5E9} abc", true),
            "\u{5E9}\u{5DC}\u{5D5}\u{5DD} abc"
        );
        assert_eq!(reorder("2006 \u{644}\u{627}", false), "\u{627}\u{644} 2006");
        assert_eq!(reorder("plain", false), "plain");
    }

    #[test]
    fn gaps_become_spaces_and_close_glyphs_a_word() {
        // "ab" then a gap of 0.3 em, then "cd": two words; a gap of 0.05 em: one.
        let mut c = chars("ab", 0.0, 100.0, 10.0, 5.0);
        c.extend(chars("cd", 13.0, 100.0, 10.0, 5.0));
        c.extend(chars("ef", 23.5, 100.0, 10.0, 5.0));
        let b = layout(&c);
        assert_eq!(text(&b), "ab cdef");
    }

    #[test]
    fn fake_bold_is_dropped_and_lines_ordered() {
        let mut c = chars("Title", 10.0, 50.0, 12.0, 6.0);
        c.extend(chars("Title", 10.3, 50.0, 12.0, 6.0));
        c.extend(chars("body", 10.0, 66.0, 12.0, 6.0));
        let b = layout(&c);
        assert_eq!(text(&b), "Title\nbody");
        assert_eq!(b[0].lines[0].bbox, [10.0, 40.4, 40.0, 52.4]);
    }

    #[test]
    fn captions_drawn_over_each_other_are_two_lines() {
        // A 12 pt caption and a 9 pt one 3.8 pt lower, overlapping along
        // the line (a form's group label and its first option): close
        // enough in baseline for one line, but they overprint.
        let mut c = chars("RdoGrp1", 82.8, 273.2, 12.0, 6.0);
        c.extend(chars("Rdo1", 99.9, 277.0, 9.0, 4.5));
        let t = text(&layout(&c));
        assert!(t == "RdoGrp1\nRdo1" || t == "RdoGrp1\n\nRdo1", "{t:?}");
        // A superscript that follows its word stays on the line.
        let mut c = chars("x", 10.0, 100.0, 10.0, 5.0);
        c.extend(chars("2", 15.1, 97.5, 7.0, 3.5));
        c.extend(chars("y", 22.0, 100.0, 10.0, 5.0));
        assert_eq!(text(&layout(&c)), "x2 y");
    }

    #[test]
    fn columns_are_read_one_after_the_other_and_hyphens_joined() {
        let mut c = Vec::new();
        c.extend(chars("left1 exam-", 0.0, 100.0, 10.0, 5.0));
        c.extend(chars("ple left2", 0.0, 112.0, 10.0, 5.0));
        c.extend(chars("right1", 200.0, 100.0, 10.0, 5.0));
        c.extend(chars("right2", 200.0, 112.0, 10.0, 5.0));
        let b = layout(&c);
        assert_eq!(text(&b), "left1 example left2\n\nright1\nright2");
    }
}
