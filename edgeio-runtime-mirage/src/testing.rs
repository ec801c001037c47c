//! The test kernels every unikernel test of edgeio boots (feature `testing`): one assembly
//! file, `tests/kernels/hello.S`, assembled with `as --32` and linked with `ld -m elf_i386`
//! at 1 MiB (binutils), in a variant per [`Kernel`]. This crate's tests and the facade's
//! process tests share it, so there is one way to make a kernel.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The line every test kernel prints on COM1.
pub const HELLO: &str = "edgeio test kernel: hello from COM1";

/// The kernel's source, carried in the library so a caller needs nothing but binutils.
const SOURCE: &str = include_str!("../tests/kernels/hello.S");

/// A variant of the test kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Prints [`HELLO`], then exits through isa-debug-exit with this code (0–127).
    Exit(u8),
    /// Prints [`HELLO`], then halts forever (until QMP quit or a signal).
    Loop,
    /// The exit kernel without its multiboot header: an ELF that is not a kernel.
    NoHeader,
}

impl Kernel {
    /// The `--defsym` that selects this variant in the source.
    fn defsym(self) -> String {
        match self {
            Kernel::Exit(code) => format!("CODE={code}"),
            Kernel::Loop => "LOOP=1".into(),
            Kernel::NoHeader => "NOHEADER=1".into(),
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        format!("cannot run {program} (binutils is needed to build the test kernels): {e}")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The ELF file of `kernel` in `dir` (created when missing), built unless a file of the same
/// source and variant is there already: its name carries a hash of both. Parallel callers
/// (test processes) build in folders of their own and rename the result into place
/// atomically, so none sees a half-written kernel.
pub fn build_kernel(kernel: Kernel, dir: &Path) -> Result<PathBuf, String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let io = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dir.display());
    let defsym = kernel.defsym();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (SOURCE, &defsym).hash(&mut hasher);
    let name = defsym.replace('=', "-").to_lowercase();
    let out = dir.join(format!("hello-{name}-{:016x}.elf", hasher.finish()));
    if out.is_file() {
        return Ok(out);
    }
    let work = dir.join(format!(
        "build-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&work).map_err(|e| io("cannot create a build folder", e))?;
    let built = (|| {
        let source = work.join("hello.S");
        std::fs::write(&source, SOURCE).map_err(|e| io("cannot write the source", e))?;
        let (object, elf) = (work.join("kernel.o"), work.join("kernel.elf"));
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let (s, o, e) = (path(&source), path(&object), path(&elf));
        run("as", &["--32", "--defsym", &defsym, &s, "-o", &o])?;
        run(
            "ld",
            &[
                "-m", "elf_i386", "-Ttext", "0x100000", "-e", "_start", "-o", &e, &o,
            ],
        )?;
        std::fs::rename(&elf, &out).map_err(|e| io("cannot move the kernel into place", e))
    })();
    let _ = std::fs::remove_dir_all(&work);
    built.map(|()| out)
}

/// [`build_kernel`] for tests: panics with the reason when the kernel cannot be built.
pub fn kernel(kernel: Kernel, dir: &Path) -> PathBuf {
    build_kernel(kernel, dir)
        .unwrap_or_else(|e| panic!("cannot build the test kernel {kernel:?}: {e}"))
}
