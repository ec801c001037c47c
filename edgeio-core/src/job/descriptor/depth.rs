//! Nesting bounded before the YAML parser sees a descriptor.
//!
//! libyaml's scanner (under `serde_yaml_ng`) checks every open flow collection on every token,
//! so its time grows with the square of the nesting depth: 100,000 nested `[` (200 KB) held a
//! core for about 22 s before serde's recursion limit answered. `yaml-rust2`'s scanner, in
//! safe Rust, tokenizes the same grammar and gives up by itself past 255 flow levels; counting
//! its collection tokens refuses a descriptor nested deeper than [`MAX_NESTING`] in time linear
//! in its size, before libyaml reads a byte of it. A descriptor needs three or four levels.
//!
//! Block nesting is slow in libyaml too (500,000 compact `- ` levels on one line took 0.2 s to
//! reach serde's recursion limit), so every descriptor is scanned; for an ordinary one that
//! costs microseconds.

use super::DescriptorError;
use yaml_rust2::scanner::{Scanner, TokenType};

/// The deepest nesting of collections (mappings and sequences, block or flow) a descriptor
/// may have.
pub const MAX_NESTING: usize = 16;

/// Refuses `text` when its collections nest deeper than [`MAX_NESTING`], naming where. Any
/// other problem is left to the parser, which says it better.
pub(super) fn check_nesting(text: &str) -> Result<(), DescriptorError> {
    let mut scanner = Scanner::new(text.chars());
    let mut depth = 0usize;
    let mut content = false;
    for token in &mut scanner {
        match token.1 {
            TokenType::BlockSequenceStart
            | TokenType::BlockMappingStart
            | TokenType::FlowSequenceStart
            | TokenType::FlowMappingStart => {
                content = true;
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(too_deep(token.0.line(), token.0.col() + 1, MAX_NESTING));
                }
            }
            TokenType::BlockEnd | TokenType::FlowSequenceEnd | TokenType::FlowMappingEnd => {
                depth = depth.saturating_sub(1);
            }
            // serde reads one document and refuses a second at its start: nothing after that
            // reaches libyaml's scanner
            TokenType::DocumentEnd => break,
            TokenType::DocumentStart if content => break,
            _ => {}
        }
    }
    match scanner.get_error() {
        // its own limit on flow levels, met while it looked ahead for a key: the place it
        // names is where that many levels were open
        Some(e) if e.info().contains("recursion limit") => Err(too_deep(
            e.marker().line(),
            e.marker().col() + 1,
            SCANNER_FLOW_LIMIT,
        )),
        _ => Ok(()),
    }
}

/// How many flow levels `yaml-rust2`'s scanner opens before it gives up (its level is a `u8`).
const SCANNER_FLOW_LIMIT: usize = 255;

/// The refusal: nesting past `levels` found at `line`, `column` (from 1).
fn too_deep(line: usize, column: usize, levels: usize) -> DescriptorError {
    DescriptorError::Syntax {
        line: Some(line),
        column: Some(column),
        message: format!(
            "collections nested more than {levels} levels deep (the limit is {MAX_NESTING}; a descriptor needs 3 or 4)"
        ),
    }
}
