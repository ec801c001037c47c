//! Amounts of compute: what a job needs and what a node or cluster offers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// CPU in millicores, memory and disk in bytes, whole GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// CPU in thousandths of a core (`500` = half a core).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Disk in bytes.
    pub disk_bytes: u64,
    /// Whole GPUs.
    pub gpus: u32,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        disk_bytes: 0,
        gpus: 0,
    };

    /// True when every amount of `need` fits into `self`.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cpu_millis <= self.cpu_millis
            && need.memory_bytes <= self.memory_bytes
            && need.disk_bytes <= self.disk_bytes
            && need.gpus <= self.gpus
    }

    /// `self - other`, each amount floored at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(other.disk_bytes),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// `self + other`, each amount capped at the type's maximum.
    pub fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            disk_bytes: self.disk_bytes.saturating_add(other.disk_bytes),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    /// The smaller of each amount.
    pub fn min_each(&self, other: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.min(other.cpu_millis),
            memory_bytes: self.memory_bytes.min(other.memory_bytes),
            disk_bytes: self.disk_bytes.min(other.disk_bytes),
            gpus: self.gpus.min(other.gpus),
        }
    }
}

/// Formats bytes with binary units, as users read them (`1.5 GiB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if (value - value.round()).abs() < 0.05 {
        format!("{} {}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Formats millicores as users read them (`500m`, `2 cores`).
pub fn human_cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        let cores = millis / 1000;
        format!("{cores} core{}", if cores == 1 { "" } else { "s" })
    } else {
        format!("{millis}m")
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}, memory {}, disk {}, gpus {}",
            human_cpu(self.cpu_millis),
            human_bytes(self.memory_bytes),
            human_bytes(self.disk_bytes),
            self.gpus
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_checks_every_amount() {
        let free = Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            disk_bytes: 0,
            gpus: 0,
        };
        assert!(free.fits(&Resources {
            cpu_millis: 1000,
            ..Resources::ZERO
        }));
        assert!(!free.fits(&Resources {
            gpus: 1,
            ..Resources::ZERO
        }));
    }

    #[test]
    fn human_units_read_naturally() {
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_bytes(2 << 30), "2 GiB");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_cpu(500), "500m");
        assert_eq!(human_cpu(2000), "2 cores");
    }
}
