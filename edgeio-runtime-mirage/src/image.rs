//! What kind of unikernel an image file is: given by the descriptor, or inferred from the file.
//!
//! The kind decides the tender: multiboot and Solo5 `virtio` images boot under qemu with
//! `-kernel`, Solo5 `hvt` and `spt` images run under `solo5-hvt` / `solo5-spt`, and Mirage
//! `unix`-target images are ordinary executables for the `native` runtime.
//!
//! Inference reads marks in the file, never its name:
//! * a Solo5 ABI note (`.note.solo5.abi`, note name `Solo5`, type `ABI1`) names the target;
//! * a multiboot v1 header (magic `0x1BADB002`, 4-byte aligned, in the first 8 KiB, checksum
//!   summing to zero) marks a multiboot kernel;
//! * an ELF with a program interpreter (`PT_INTERP`) is a hosted program: a `unix` target;
//! * anything else — including an ELF with none of these marks — is not a kernel.
//!
//! ```
//! use edgeio_runtime_mirage::image::{detect, ImageKind};
//!
//! let mut kernel = vec![0u8; 64];
//! let magic: u32 = 0x1BAD_B002;
//! kernel[16..20].copy_from_slice(&magic.to_le_bytes());
//! kernel[24..28].copy_from_slice(&0u32.wrapping_sub(magic).to_le_bytes());
//! assert_eq!(detect(&kernel).unwrap(), ImageKind::Multiboot);
//! assert!(detect(b"#!/bin/sh\necho hi\n").is_err());
//! ```

use crate::command::Tender;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Label of an instance spec that gives the image kind explicitly (`multiboot`, `virtio`,
/// `hvt`, `spt` or `unix`); without it the kind is inferred from the file.
pub const LABEL_TARGET: &str = "edgeio.mirage.target";

/// How far into the file a multiboot v1 header may start (the multiboot specification).
pub const MULTIBOOT_SEARCH_BYTES: usize = 8192;
/// Multiboot v1 header magic.
pub const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
/// Multiboot2 header magic (recognised only to explain that qemu cannot boot it).
pub const MULTIBOOT2_MAGIC: u32 = 0xE852_50D6;
/// Name of Solo5's ELF notes.
pub const SOLO5_NOTE_NAME: &[u8] = b"Solo5";
/// Type of Solo5's ABI note (`"ABI1"` little-endian).
pub const SOLO5_ABI1_NOTE_TYPE: u32 = 0x3149_4241;

/// The kind of a unikernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A multiboot v1 kernel, booted by qemu with `-kernel`.
    Multiboot,
    /// A Solo5 `virtio` image (itself multiboot), booted by qemu with `-kernel`.
    Virtio,
    /// A Solo5 `hvt` image, run by `solo5-hvt` (needs KVM).
    Hvt,
    /// A Solo5 `spt` image, run by `solo5-spt` (a seccomp-sandboxed process).
    Spt,
    /// A Mirage `unix`-target executable: runs under the `native` runtime, not this one.
    Unix,
}

impl ImageKind {
    /// Every kind, in the order people read them.
    pub const ALL: [ImageKind; 5] = [
        ImageKind::Multiboot,
        ImageKind::Virtio,
        ImageKind::Hvt,
        ImageKind::Spt,
        ImageKind::Unix,
    ];

    /// The kind as written in the [`LABEL_TARGET`] label.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Multiboot => "multiboot",
            ImageKind::Virtio => "virtio",
            ImageKind::Hvt => "hvt",
            ImageKind::Spt => "spt",
            ImageKind::Unix => "unix",
        }
    }

    /// The program that runs this kind; `None` for `unix`, which is not a unikernel tender's.
    pub fn tender(self) -> Option<Tender> {
        match self {
            ImageKind::Multiboot | ImageKind::Virtio => Some(Tender::Qemu),
            ImageKind::Hvt => Some(Tender::Hvt),
            ImageKind::Spt => Some(Tender::Spt),
            ImageKind::Unix => None,
        }
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`LABEL_TARGET`] value that names no image kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown unikernel target {value:?}: known targets are multiboot, virtio, hvt, spt and unix"
)]
pub struct UnknownKind {
    /// The value given.
    pub value: String,
}

impl FromStr for ImageKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownKind {
                value: s.to_string(),
            })
    }
}

/// Why a file is not a kernel this runtime can boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NotAKernel {
    /// What was found, for people.
    pub reason: String,
}

fn not_a_kernel(reason: impl Into<String>) -> NotAKernel {
    NotAKernel {
        reason: reason.into(),
    }
}

/// Infers the kind of an image from its bytes (see the module docs for the rules).
pub fn detect(bytes: &[u8]) -> Result<ImageKind, NotAKernel> {
    let elf = Elf::parse(bytes);
    if let Some(target) = elf.as_ref().and_then(|e| e.solo5_abi_target()) {
        return match target {
            1 => Ok(ImageKind::Hvt),
            2 => Ok(ImageKind::Spt),
            3 => Ok(ImageKind::Virtio),
            4 => Err(not_a_kernel(
                "a Solo5 muen image: edgeio runs hvt, spt and virtio images",
            )),
            5 => Err(not_a_kernel(
                "a Solo5 genode image: edgeio runs hvt, spt and virtio images",
            )),
            6 => Err(not_a_kernel(
                "a Solo5 xen image: edgeio runs hvt, spt and virtio images",
            )),
            other => Err(not_a_kernel(format!(
                "a Solo5 image for unknown ABI target {other}"
            ))),
        };
    }
    if has_multiboot_header(bytes) {
        return Ok(ImageKind::Multiboot);
    }
    match elf {
        Some(elf) if elf.has_interpreter() => Ok(ImageKind::Unix),
        _ if has_header(bytes, MULTIBOOT2_MAGIC, 8) => Err(not_a_kernel(
            "a multiboot2 kernel: qemu's -kernel boots multiboot v1 images only",
        )),
        Some(_) => Err(not_a_kernel(
            "an ELF file without a multiboot header in its first 8 KiB or a Solo5 ABI note (.note.solo5.abi)",
        )),
        None => Err(not_a_kernel(
            "not an ELF file, and no multiboot header in its first 8 KiB",
        )),
    }
}

/// True when a valid multiboot v1 header (magic, flags, checksum summing to zero) starts at a
/// 4-byte boundary in the first 8 KiB.
pub fn has_multiboot_header(bytes: &[u8]) -> bool {
    has_header(bytes, MULTIBOOT_MAGIC, 4)
}

// Multiboot v1 sums (magic, flags, checksum); multiboot2 sums (magic, arch, length, checksum)
// with an 8-byte alignment, but a simple magic-plus-checksum scan tells both apart well enough.
fn has_header(bytes: &[u8], magic: u32, align: usize) -> bool {
    let window = &bytes[..bytes.len().min(MULTIBOOT_SEARCH_BYTES)];
    (0..window.len())
        .step_by(align)
        .filter(|&at| le_u32(window, at) == Some(magic))
        .any(|at| {
            if magic == MULTIBOOT_MAGIC {
                matches!((le_u32(window, at + 4), le_u32(window, at + 8)),
                    (Some(flags), Some(sum)) if magic.wrapping_add(flags).wrapping_add(sum) == 0)
            } else {
                matches!(
                    (le_u32(window, at + 4), le_u32(window, at + 8), le_u32(window, at + 12)),
                    (Some(arch), Some(len), Some(sum))
                        if magic.wrapping_add(arch).wrapping_add(len).wrapping_add(sum) == 0
                )
            }
        })
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at.checked_add(8)?).map(|s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;

/// A region of the file: offset, size and alignment of the notes in it.
#[derive(Debug, Clone, Copy)]
struct Region {
    offset: usize,
    size: usize,
    align: usize,
}

/// Just enough of a little-endian ELF file (32 or 64 bit) to find notes and an interpreter.
/// Every read is bounds-checked: a truncated or hostile file yields fewer facts, never a panic.
struct Elf<'a> {
    bytes: &'a [u8],
    program_types: Vec<u32>,
    note_regions: Vec<Region>,
}

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Elf<'a>> {
        if bytes.get(..4)? != b"\x7fELF" || *bytes.get(5)? != 1 {
            return None;
        }
        let is64 = match *bytes.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let word = |at: usize| -> Option<usize> {
            if is64 {
                le_u64(bytes, at).and_then(|v| usize::try_from(v).ok())
            } else {
                le_u32(bytes, at).map(|v| v as usize)
            }
        };
        let (phoff, shoff, rest) = if is64 {
            (word(32)?, word(40)?, 54)
        } else {
            (word(28)?, word(32)?, 42)
        };
        let phentsize = le_u16(bytes, rest)? as usize;
        let phnum = le_u16(bytes, rest + 2)? as usize;
        let shentsize = le_u16(bytes, rest + 4)? as usize;
        let shnum = le_u16(bytes, rest + 6)? as usize;

        let mut elf = Elf {
            bytes,
            program_types: Vec::new(),
            note_regions: Vec::new(),
        };
        for i in 0..phnum {
            let Some(at) = i.checked_mul(phentsize).and_then(|o| o.checked_add(phoff)) else {
                break;
            };
            let Some(p_type) = le_u32(bytes, at) else {
                break;
            };
            elf.program_types.push(p_type);
            if p_type == PT_NOTE {
                let region = if is64 {
                    (word(at + 8), word(at + 32), word(at + 48))
                } else {
                    (word(at + 4), word(at + 16), word(at + 28))
                };
                if let (Some(offset), Some(size), Some(align)) = region {
                    elf.note_regions.push(Region {
                        offset,
                        size,
                        align,
                    });
                }
            }
        }
        for i in 0..shnum {
            let Some(at) = i.checked_mul(shentsize).and_then(|o| o.checked_add(shoff)) else {
                break;
            };
            let Some(sh_type) = le_u32(bytes, at + 4) else {
                break;
            };
            if sh_type == SHT_NOTE {
                let region = if is64 {
                    (word(at + 24), word(at + 32), word(at + 48))
                } else {
                    (word(at + 16), word(at + 20), word(at + 32))
                };
                if let (Some(offset), Some(size), Some(align)) = region {
                    elf.note_regions.push(Region {
                        offset,
                        size,
                        align,
                    });
                }
            }
        }
        Some(elf)
    }

    fn has_interpreter(&self) -> bool {
        self.program_types.contains(&PT_INTERP)
    }

    /// The `abi_target` of the first Solo5 ABI1 note in any note section or segment.
    fn solo5_abi_target(&self) -> Option<u32> {
        self.note_regions
            .iter()
            .find_map(|r| solo5_target_in(self.bytes, *r))
    }
}

fn solo5_target_in(bytes: &[u8], region: Region) -> Option<u32> {
    let end = region.offset.checked_add(region.size)?.min(bytes.len());
    // notes are 4-byte aligned in practice; an 8-aligned note region pads to 8
    let align = if region.align == 8 { 8 } else { 4 };
    let pad = |n: usize| n.checked_add(align - 1).map(|v| v & !(align - 1));
    let mut at = region.offset;
    while at.checked_add(12)? <= end {
        let namesz = le_u32(bytes, at)? as usize;
        let descsz = le_u32(bytes, at + 4)? as usize;
        let n_type = le_u32(bytes, at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad(namesz)?)?;
        let next = desc_at.checked_add(pad(descsz)?)?;
        let name = bytes.get(name_at..name_at.checked_add(namesz)?)?;
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        if name == SOLO5_NOTE_NAME && n_type == SOLO5_ABI1_NOTE_TYPE && descsz >= 4 {
            return le_u32(bytes, desc_at);
        }
        if next <= at {
            return None;
        }
        at = next;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal little-endian ELF64 with the given program header types and, optionally, one
    /// note section holding a Solo5 ABI1 note for `target`.
    pub(crate) fn elf64(program_types: &[u32], solo5_target: Option<u32>) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        let phoff = b.len();
        for &t in program_types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend(ph);
        }
        b[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(program_types.len() as u16).to_le_bytes());
        b[58..60].copy_from_slice(&64u16.to_le_bytes());
        if let Some(target) = solo5_target {
            let note_at = b.len();
            b.extend(6u32.to_le_bytes()); // "Solo5\0"
            b.extend(16u32.to_le_bytes());
            b.extend(SOLO5_ABI1_NOTE_TYPE.to_le_bytes());
            b.extend(b"Solo5\0\0\0");
            b.extend(target.to_le_bytes());
            b.extend(1u32.to_le_bytes());
            b.extend([0u8; 8]);
            let note_size = b.len() - note_at;
            let shoff = b.len();
            b.extend([0u8; 64]); // the null section
            let mut sh = vec![0u8; 64];
            sh[4..8].copy_from_slice(&SHT_NOTE.to_le_bytes());
            sh[24..32].copy_from_slice(&(note_at as u64).to_le_bytes());
            sh[32..40].copy_from_slice(&(note_size as u64).to_le_bytes());
            sh[48..56].copy_from_slice(&4u64.to_le_bytes());
            b.extend(sh);
            b[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
            b[60..62].copy_from_slice(&2u16.to_le_bytes());
        }
        b
    }

    fn with_multiboot_at(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
        if bytes.len() < at + 12 {
            bytes.resize(at + 12, 0);
        }
        let flags = 3u32;
        bytes[at..at + 4].copy_from_slice(&MULTIBOOT_MAGIC.to_le_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        let sum = 0u32.wrapping_sub(MULTIBOOT_MAGIC).wrapping_sub(flags);
        bytes[at + 8..at + 12].copy_from_slice(&sum.to_le_bytes());
        bytes
    }

    #[test]
    fn a_multiboot_header_in_the_first_8_kib_makes_a_multiboot_kernel() {
        let elf = with_multiboot_at(elf64(&[1], None), 0x1000);
        assert_eq!(detect(&elf), Ok(ImageKind::Multiboot));
        let flat = with_multiboot_at(vec![0; 32], 8);
        assert_eq!(detect(&flat), Ok(ImageKind::Multiboot));
    }

    #[test]
    fn a_multiboot_header_past_8_kib_or_misaligned_or_with_a_bad_checksum_does_not_count() {
        assert!(detect(&with_multiboot_at(elf64(&[1], None), 8192)).is_err());
        assert!(detect(&with_multiboot_at(vec![0; 64], 6)).is_err());
        let mut bad = with_multiboot_at(vec![0; 64], 8);
        bad[16] ^= 1;
        assert!(!has_multiboot_header(&bad));
    }

    #[test]
    fn a_solo5_abi_note_names_the_target() {
        assert_eq!(detect(&elf64(&[1], Some(1))), Ok(ImageKind::Hvt));
        assert_eq!(detect(&elf64(&[1], Some(2))), Ok(ImageKind::Spt));
        // a virtio image is multiboot as well; the note wins because it is more precise
        let virtio = with_multiboot_at(elf64(&[1], Some(3)), 0x200);
        assert_eq!(detect(&virtio), Ok(ImageKind::Virtio));
        let muen = detect(&elf64(&[1], Some(4))).unwrap_err();
        assert!(muen.reason.contains("muen"), "{muen}");
    }

    #[test]
    fn an_elf_with_an_interpreter_is_a_unix_target() {
        assert_eq!(
            detect(&elf64(&[6, PT_INTERP, 1], None)),
            Ok(ImageKind::Unix)
        );
    }

    #[test]
    fn files_without_marks_are_not_kernels_and_say_why() {
        let elf = detect(&elf64(&[1], None)).unwrap_err();
        assert!(elf.reason.starts_with("an ELF file without"), "{elf}");
        let text = detect(b"hello, world\n").unwrap_err();
        assert!(text.reason.starts_with("not an ELF file"), "{text}");
        assert!(detect(&[]).is_err());
        let mut mb2 = vec![0u8; 32];
        mb2[8..12].copy_from_slice(&MULTIBOOT2_MAGIC.to_le_bytes());
        let len = 32u32;
        let sum = 0u32.wrapping_sub(MULTIBOOT2_MAGIC).wrapping_sub(len);
        mb2[16..20].copy_from_slice(&len.to_le_bytes());
        mb2[20..24].copy_from_slice(&sum.to_le_bytes());
        let err = detect(&mb2).unwrap_err();
        assert!(err.reason.contains("multiboot2"), "{err}");
    }

    #[test]
    fn truncated_and_hostile_elf_headers_do_not_panic() {
        let full = elf64(&[1, PT_INTERP], Some(1));
        for cut in 0..full.len() {
            let _ = detect(&full[..cut]);
        }
        let mut huge = elf64(&[1], Some(1));
        huge[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        huge[60..62].copy_from_slice(&u16::MAX.to_le_bytes());
        let _ = detect(&huge);
    }

    #[test]
    fn kinds_parse_from_labels_case_insensitively() {
        assert_eq!("HVT".parse::<ImageKind>(), Ok(ImageKind::Hvt));
        assert_eq!(" virtio ".parse::<ImageKind>(), Ok(ImageKind::Virtio));
        let err = "xen".parse::<ImageKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown unikernel target \"xen\": known targets are multiboot, virtio, hvt, spt and unix"
        );
        assert_eq!(ImageKind::Unix.tender(), None);
        assert_eq!(ImageKind::Virtio.tender(), Some(Tender::Qemu));
    }
}
