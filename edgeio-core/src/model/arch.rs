//! CPU architectures, named as Docker and Go name them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A CPU architecture. Unknown names are kept as [`Arch::Other`] so new hardware still registers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
    /// 32-bit ARM.
    Arm,
    /// 64-bit RISC-V.
    Riscv64,
    /// Anything else, by name.
    Other(String),
}

impl Arch {
    /// The architecture this program was built for.
    pub fn host() -> Arch {
        Arch::from(std::env::consts::ARCH)
    }

    /// The canonical name (`amd64`, `arm64` …).
    pub fn as_str(&self) -> &str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
            Arch::Riscv64 => "riscv64",
            Arch::Other(name) => name,
        }
    }
}

impl From<&str> for Arch {
    fn from(name: &str) -> Arch {
        match name.to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x86-64" => Arch::Amd64,
            "arm64" | "aarch64" => Arch::Arm64,
            "arm" | "armv7" | "armv7l" | "armhf" => Arch::Arm,
            "riscv64" => Arch::Riscv64,
            other => Arch::Other(other.to_string()),
        }
    }
}

impl From<String> for Arch {
    fn from(name: String) -> Arch {
        Arch::from(name.as_str())
    }
}

impl From<Arch> for String {
    fn from(arch: Arch) -> String {
        arch.as_str().to_string()
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_normalize() {
        assert_eq!(Arch::from("x86_64"), Arch::Amd64);
        assert_eq!(Arch::from("aarch64"), Arch::Arm64);
        assert_eq!(Arch::from("s390x").as_str(), "s390x");
    }
}
