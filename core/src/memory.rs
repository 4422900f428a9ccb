//! How much memory this process may use: the budget (`--memory-budget`, else the cgroup's
//! limit less a reserve, else physical memory less the reserve). Jobs are planned to fit it
//! (`render::plan`); the scheduler keeps the ledger of what running jobs reserve from it.

use std::path::Path;

use crate::error::{Error, Result};

/// Kept back from a detected limit for what no job estimate covers: the runtime's own
/// allocations, the transport's buffers, the allocator's slack, page cache under a cgroup.
pub const RESERVE_BYTES: u64 = 512 << 20;

/// Where the budget came from, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    Flag,
    CgroupV2,
    CgroupV1,
    Physical,
}

impl BudgetSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::CgroupV2 => "cgroup-v2",
            Self::CgroupV1 => "cgroup-v1",
            Self::Physical => "physical",
        }
    }
}

/// The process's memory budget for everything it holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: BudgetSource,
}

/// A cgroup v2 `memory.max` value: a byte count, or `max` for none.
fn parse_v2(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A cgroup v1 `memory.limit_in_bytes`: "no limit" reads as a huge page-rounded number.
fn parse_v1(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|&v: &u64| v < (1u64 << 60))
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's cgroup v2 path (`0::/path`) from `/proc/self/cgroup`.
fn own_v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// This process's cgroup v1 memory controller path from `/proc/self/cgroup`.
fn own_v1_memory_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Budget {
    /// `flag` when given; else the tightest limit of this process's cgroup (v2, then v1,
    /// under `root`, normally `/sys/fs/cgroup`) less `RESERVE_BYTES`; else physical memory
    /// less the reserve.
    pub fn detect(flag: Option<u64>) -> Result<Self> {
        Self::detect_under(flag, Path::new("/sys/fs/cgroup"), Path::new("/proc"))
    }

    /// `detect` with the cgroup and proc roots given (for tests).
    pub fn detect_under(flag: Option<u64>, cgroup: &Path, proc: &Path) -> Result<Self> {
        if let Some(bytes) = flag {
            if bytes == 0 {
                return Err(Error::invalid("memory-budget", "must be more than 0 bytes"));
            }
            return Ok(Self {
                bytes,
                source: BudgetSource::Flag,
            });
        }
        let own = read(&proc.join("self/cgroup")).unwrap_or_default();
        let relative = |p: &str| p.trim_start_matches('/').to_string();
        let v2 = own_v2_path(&own).and_then(|p| {
            let dir = cgroup.join(relative(p));
            read(&dir.join("memory.max")).and_then(|t| parse_v2(&t))
        });
        let v1 = || {
            own_v1_memory_path(&own).and_then(|p| {
                // Inside a container the controller is mounted at its own root.
                [
                    cgroup.join("memory").join(relative(p)),
                    cgroup.join("memory"),
                ]
                .iter()
                .find_map(|dir| read(&dir.join("memory.limit_in_bytes")))
                .and_then(|t| parse_v1(&t))
            })
        };
        let physical = read(&proc.join("meminfo")).and_then(|t| parse_meminfo(&t));
        let (limit, source) = match (v2, v1()) {
            (Some(v), _) => (v, BudgetSource::CgroupV2),
            (None, Some(v)) => (v, BudgetSource::CgroupV1),
            (None, None) => (
                physical.ok_or_else(|| {
                    Error::invalid(
                        "memory-budget",
                        "cannot read /proc/meminfo; set --memory-budget",
                    )
                })?,
                BudgetSource::Physical,
            ),
        };
        let limit = physical.map_or(limit, |p| limit.min(p));
        Ok(Self {
            bytes: limit.saturating_sub(RESERVE_BYTES).max(RESERVE_BYTES),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(cgroup_self: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("proc/self/cgroup", cgroup_self);
        write(
            "proc/meminfo",
            "MemTotal:       25165824 kB\nMemFree: 1 kB\n",
        );
        for (rel, text) in files {
            write(&format!("cg/{rel}"), text);
        }
        dir
    }

    #[test]
    fn the_budget_comes_from_the_tightest_known_limit() {
        let detect = |dir: &tempfile::TempDir| {
            Budget::detect_under(None, &dir.path().join("cg"), &dir.path().join("proc")).unwrap()
        };
        let v2 = fake_root(
            "0::/kubepods/pod1\n",
            &[("kubepods/pod1/memory.max", "6442450944\n")],
        );
        assert_eq!(
            detect(&v2),
            Budget {
                bytes: (6 << 30) - RESERVE_BYTES,
                source: BudgetSource::CgroupV2
            }
        );
        let unlimited = fake_root("0::/\n", &[("memory.max", "max\n")]);
        let budget = detect(&unlimited);
        assert_eq!(budget.source, BudgetSource::Physical);
        assert_eq!(budget.bytes, (24u64 << 30) - RESERVE_BYTES);
        let v1 = fake_root(
            "4:memory:/stylize-test\n3:cpu,cpuacct:/\n",
            &[("memory/stylize-test/memory.limit_in_bytes", "3221225472\n")],
        );
        assert_eq!(detect(&v1).source, BudgetSource::CgroupV1);
        assert_eq!(detect(&v1).bytes, (3 << 30) - RESERVE_BYTES);
        let flag = Budget::detect_under(
            Some(1 << 30),
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        );
        assert_eq!(flag.unwrap().source, BudgetSource::Flag);
    }
}
