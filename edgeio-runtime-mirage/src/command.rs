//! The command lines that start a unikernel: pure functions from a [`Launch`] to a
//! [`CommandLine`], so every flag is unit-tested without a tender installed.
//!
//! qemu (multiboot and Solo5 `virtio` images):
//!
//! ```text
//! qemu-system-x86_64 -name ID -accel tcg -m 64M -smp 1 -kernel IMAGE [-append "ARGS"]
//!   -nodefaults -display none -monitor none -no-reboot
//!   -chardev file,id=console,path=STATE/instances/ID/console.log -serial chardev:console
//!   -device isa-debug-exit,iobase=0xf4,iosize=0x04
//!   -chardev socket,id=qmp,path=STATE/q/HASH.sock,server=on,wait=off -mon chardev=qmp,mode=control
//!   -pidfile STATE/instances/ID/qemu.pid
//! ```
//!
//! The console and QMP socket are spelled as `-chardev` options (the long form of
//! `-serial file:…` and `-qmp unix:…,server=on,wait=off`) because only that form lets a path
//! hold a comma (escaped as `,,`). With KVM the line says `-accel kvm`.
//!
//! Solo5 tenders (`hvt`, `spt`): `solo5-hvt --mem=64 -- IMAGE ARGS…`; their console is their
//! standard output, which the runtime sends to the same `console.log`. Solo5 is not packaged
//! in Debian, so these lines are covered by unit tests only.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The program that runs an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tender {
    /// `qemu-system-x86_64`, for multiboot and Solo5 `virtio` images.
    Qemu,
    /// `solo5-hvt`, for Solo5 `hvt` images (KVM).
    Hvt,
    /// `solo5-spt`, for Solo5 `spt` images (seccomp process).
    Spt,
}

impl Tender {
    /// Every tender.
    pub const ALL: [Tender; 3] = [Tender::Qemu, Tender::Hvt, Tender::Spt];

    /// The program's usual name, looked up on `PATH` unless the config gives a path.
    pub fn program_name(self) -> &'static str {
        match self {
            Tender::Qemu => "qemu-system-x86_64",
            Tender::Hvt => "solo5-hvt",
            Tender::Spt => "solo5-spt",
        }
    }

    /// Whether the tender has a QMP socket to ask it to quit.
    pub fn has_qmp(self) -> bool {
        matches!(self, Tender::Qemu)
    }
}

impl fmt::Display for Tender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program_name())
    }
}

/// How qemu executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// Software emulation (qemu's Tiny Code Generator).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// Everything a command line is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch<'a> {
    /// The instance id (qemu's `-name`).
    pub id: &'a str,
    /// The image file.
    pub image: &'a Path,
    /// Boot arguments for the guest.
    pub args: &'a [String],
    /// Guest memory in MiB (see [`memory_mib`]).
    pub memory_mib: u64,
    /// Virtual CPUs (see [`vcpus`]).
    pub vcpus: u32,
    /// qemu's accelerator (ignored by Solo5 tenders).
    pub accel: Accel,
    /// Where the serial console is written.
    pub console: &'a Path,
    /// The QMP socket (qemu only).
    pub qmp_socket: &'a Path,
    /// qemu's own pid file (qemu only).
    pub pid_file: &'a Path,
}

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                write!(f, " {arg:?}")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// The command line for `tender` (see the module docs).
pub fn build(tender: Tender, program: &Path, launch: &Launch<'_>) -> CommandLine {
    match tender {
        Tender::Qemu => qemu(program, launch),
        Tender::Hvt | Tender::Spt => solo5(program, launch),
    }
}

/// The qemu command line for a multiboot or Solo5 `virtio` image.
pub fn qemu(program: &Path, launch: &Launch<'_>) -> CommandLine {
    let mut args: Vec<String> = vec!["-name".into(), launch.id.into(), "-accel".into()];
    match launch.accel {
        // qemu's default CPU model, not `-cpu host`: under nested KVM here `-cpu host`
        // made qemu abort while setting MSR 0x10a (IA32_ARCH_CAPABILITIES)
        Accel::Kvm => args.push("kvm".into()),
        Accel::Tcg => args.push("tcg".into()),
    }
    args.extend([
        "-m".into(),
        format!("{}M", launch.memory_mib),
        "-smp".into(),
        launch.vcpus.to_string(),
        "-kernel".into(),
        path_arg(launch.image),
    ]);
    if !launch.args.is_empty() {
        // the multiboot command line: Mirage splits it on spaces again
        args.extend(["-append".into(), launch.args.join(" ")]);
    }
    args.extend(
        [
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .map(String::from),
    );
    args.extend([
        "-chardev".into(),
        format!("file,id=console,path={}", escape_opt(launch.console)),
        "-serial".into(),
        "chardev:console".into(),
        "-device".into(),
        "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
        "-chardev".into(),
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            escape_opt(launch.qmp_socket)
        ),
        "-mon".into(),
        "chardev=qmp,mode=control".into(),
        "-pidfile".into(),
        path_arg(launch.pid_file),
    ]);
    CommandLine {
        program: program.to_path_buf(),
        args,
    }
}

/// The `solo5-hvt` / `solo5-spt` command line: `--mem=MiB -- IMAGE ARGS…`.
pub fn solo5(program: &Path, launch: &Launch<'_>) -> CommandLine {
    let mut args = vec![
        format!("--mem={}", launch.memory_mib),
        "--".into(),
        path_arg(launch.image),
    ];
    args.extend(launch.args.iter().cloned());
    CommandLine {
        program: program.to_path_buf(),
        args,
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A path as the value of a qemu `key=value,…` option: commas doubled.
pub fn escape_opt(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Guest memory in MiB: `memory_bytes` rounded up to whole MiB, or `default_mib` when the job
/// asked for none (`0` means "not said", not "no memory").
pub fn memory_mib(memory_bytes: u64, default_mib: u64) -> u64 {
    if memory_bytes == 0 {
        default_mib
    } else {
        memory_bytes.div_ceil(MIB)
    }
}

/// Virtual CPUs for `cpu_millis`: rounded up to whole cores, at least one.
pub fn vcpus(cpu_millis: u64) -> u32 {
    u32::try_from(cpu_millis.div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Longest path a unix socket can bind: `sun_path` holds 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// The folder of QMP sockets under a state folder.
pub fn socket_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("q")
}

/// The QMP socket of an instance: `STATE/q/<16 hex digits>.sock`, named by a hash of the id so
/// that the path's length does not grow with the id (ids may hold 128 characters).
pub fn qmp_socket_path(state_dir: &Path, id: &str) -> PathBuf {
    socket_dir(state_dir).join(format!("{:016x}.sock", fnv1a64(id.as_bytes())))
}

/// The longest state folder whose socket paths fit [`MAX_SOCKET_PATH`].
pub fn max_state_dir_len() -> usize {
    // "/q/" + 16 hex digits + ".sock"
    MAX_SOCKET_PATH - (3 + 16 + 5)
}

/// Checks that a unix socket path fits `sun_path`.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        Err(format!(
            "unix socket path {} is {len} bytes; the limit is {MAX_SOCKET_PATH}",
            path.display()
        ))
    } else {
        Ok(())
    }
}

/// FNV-1a, 64 bits: stable across Rust versions and processes (std's hasher is neither),
/// which a name that must be found again after a restart needs.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch<'a>(args: &'a [String], accel: Accel) -> Launch<'a> {
        Launch {
            id: "web-0",
            image: Path::new("/images/hello.elf"),
            args,
            memory_mib: 64,
            vcpus: 2,
            accel,
            console: Path::new("/state/instances/web-0/console.log"),
            qmp_socket: Path::new("/state/q/0123456789abcdef.sock"),
            pid_file: Path::new("/state/instances/web-0/qemu.pid"),
        }
    }

    #[test]
    fn qemu_runs_the_kernel_headless_with_console_file_debug_exit_qmp_and_pid_file() {
        let line = qemu(
            Path::new("qemu-system-x86_64"),
            &launch(
                &["--ipv4=10.0.0.2/24".into(), "-l *:debug".into()],
                Accel::Tcg,
            ),
        );
        assert_eq!(
            line.to_string(),
            "qemu-system-x86_64 -name web-0 -accel tcg -m 64M -smp 2 -kernel /images/hello.elf \
             -append \"--ipv4=10.0.0.2/24 -l *:debug\" -nodefaults -display none -monitor none \
             -no-reboot -chardev file,id=console,path=/state/instances/web-0/console.log \
             -serial chardev:console -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -chardev socket,id=qmp,path=/state/q/0123456789abcdef.sock,server=on,wait=off \
             -mon chardev=qmp,mode=control -pidfile /state/instances/web-0/qemu.pid"
        );
    }

    #[test]
    fn qemu_with_kvm_keeps_the_default_cpu_and_without_args_has_no_append() {
        let line = qemu(Path::new("/usr/bin/qemu"), &launch(&[], Accel::Kvm));
        let text = line.to_string();
        assert!(text.contains("-accel kvm -m 64M"), "{text}");
        assert!(!text.contains("-append"), "{text}");
        assert_eq!(line.program, Path::new("/usr/bin/qemu"));
    }

    #[test]
    fn commas_in_qemu_option_paths_are_doubled() {
        let mut l = launch(&[], Accel::Tcg);
        let console = PathBuf::from("/st,ate/console.log");
        l.console = &console;
        let text = qemu(Path::new("qemu"), &l).args.join(" ");
        assert!(text.contains("path=/st,,ate/console.log"), "{text}");
    }

    #[test]
    fn solo5_hvt_and_spt_take_memory_in_mib_then_the_image_and_its_arguments() {
        let args = ["--ipv4=10.0.0.2/24".to_string(), "--hello".to_string()];
        let hvt = build(
            Tender::Hvt,
            Path::new("solo5-hvt"),
            &launch(&args, Accel::Kvm),
        );
        assert_eq!(
            hvt.to_string(),
            "solo5-hvt --mem=64 -- /images/hello.elf --ipv4=10.0.0.2/24 --hello"
        );
        let spt = build(
            Tender::Spt,
            Path::new("/opt/solo5/bin/solo5-spt"),
            &launch(&[], Accel::Tcg),
        );
        assert_eq!(
            spt.to_string(),
            "/opt/solo5/bin/solo5-spt --mem=64 -- /images/hello.elf"
        );
    }

    #[test]
    fn memory_rounds_up_to_mib_and_zero_takes_the_default() {
        assert_eq!(memory_mib(0, 64), 64);
        assert_eq!(memory_mib(1, 64), 1);
        assert_eq!(memory_mib(MIB, 64), 1);
        assert_eq!(memory_mib(MIB + 1, 64), 2);
        assert_eq!(memory_mib(512 * MIB, 64), 512);
    }

    #[test]
    fn cpus_round_up_to_cores_with_at_least_one() {
        assert_eq!(vcpus(0), 1);
        assert_eq!(vcpus(1), 1);
        assert_eq!(vcpus(1000), 1);
        assert_eq!(vcpus(1001), 2);
        assert_eq!(vcpus(2500), 3);
        assert_eq!(vcpus(u64::MAX), u32::MAX);
    }

    #[test]
    fn socket_paths_are_short_stable_and_checked_against_the_unix_limit() {
        let long_id = "a".repeat(128);
        let path = qmp_socket_path(Path::new("/var/lib/edgeio/mirage"), &long_id);
        assert_eq!(path.as_os_str().len(), "/var/lib/edgeio/mirage".len() + 24);
        assert_eq!(
            path,
            qmp_socket_path(Path::new("/var/lib/edgeio/mirage"), &long_id)
        );
        assert_ne!(
            path,
            qmp_socket_path(Path::new("/var/lib/edgeio/mirage"), "b")
        );
        assert!(check_socket_path(&path).is_ok());

        let longest = format!("/{}", "s".repeat(max_state_dir_len() - 1));
        assert!(check_socket_path(&qmp_socket_path(Path::new(&longest), "x")).is_ok());
        let too_long = format!("{longest}s");
        let err = check_socket_path(&qmp_socket_path(Path::new(&too_long), "x")).unwrap_err();
        assert!(err.contains("is 108 bytes; the limit is 107"), "{err}");
    }

    #[test]
    fn the_socket_hash_is_fnv1a() {
        // reference values of FNV-1a 64
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
