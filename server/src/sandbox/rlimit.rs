//! The extractor child's resource limits, set by the child on itself
//! (`setrlimit`) before it opens the untrusted file: address space, CPU
//! seconds, the size of any file it writes, open files, no new processes
//! or threads, no core dumps. No outside tool (`prlimit`) is needed.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// What the child may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// Address space, in bytes.
    pub memory_bytes: u64,
    /// CPU seconds; then SIGXCPU, then SIGKILL.
    pub cpu_secs: u64,
    /// Largest file the child may write (its results); beyond, SIGXFSZ.
    pub file_bytes: u64,
}

/// Descriptors a child may hold: the input, its results, std streams.
const OPEN_FILES: u64 = 64;

impl ChildLimits {
    /// Applies the limits to this process, soft and hard alike (so the
    /// parser cannot raise them again); a limit already lower stays.
    /// Processes: none may be started (threads count too on Linux); this
    /// binds users other than root, which the kernel exempts.
    pub fn apply(&self) -> Result<(), String> {
        let set = |resource: Resource, name: &str, want: u64| -> Result<(), String> {
            let now = getrlimit(resource);
            let value = now.maximum.map_or(want, |hard| hard.min(want));
            setrlimit(
                resource,
                Rlimit {
                    current: Some(value),
                    maximum: Some(value),
                },
            )
            .map_err(|e| format!("cannot limit {name} to {value}: {e}"))
        };
        set(Resource::As, "the address space", self.memory_bytes)?;
        set(Resource::Cpu, "CPU seconds", self.cpu_secs.max(1))?;
        set(Resource::Fsize, "file size", self.file_bytes)?;
        set(Resource::Nofile, "open files", OPEN_FILES)?;
        set(Resource::Core, "core dumps", 0)?;
        set(Resource::Nproc, "processes", 0)?;
        Ok(())
    }
}
