//! Crashes the tests inject at a precise point of the commit protocol
//! (`OOM_PROBE_FAULT`): a SIGKILL can land anywhere, these make the two
//! windows that matter testable without luck. Not a user option.

/// A crash at a point of the commit protocol, from `OOM_PROBE_FAULT`:
/// `crash-after-commit:N` (SIGKILL itself after the Nth non-empty batch is
/// committed, before it is printed) or `crash-after-print:N` (after it is
/// printed, before it is dropped from the state file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// After the Nth non-empty batch is committed, before it is printed.
    AfterCommit(u64),
    /// After the Nth non-empty batch is printed, before it is dropped from
    /// the state file.
    AfterPrint(u64),
}

impl Fault {
    /// The fault `OOM_PROBE_FAULT` asks for; `None` when unset or not
    /// understood.
    pub fn from_env() -> Option<Self> {
        Self::parse(&std::env::var("OOM_PROBE_FAULT").ok()?)
    }

    /// Reads `crash-after-commit:N` or `crash-after-print:N`.
    pub fn parse(spec: &str) -> Option<Self> {
        let (point, n) = spec.split_once(':')?;
        let n = n.parse().ok()?;
        match point {
            "crash-after-commit" => Some(Self::AfterCommit(n)),
            "crash-after-print" => Some(Self::AfterPrint(n)),
            _ => None,
        }
    }

    /// Whether `this` is the fault `at` the `batch`th batch.
    pub fn due(this: Option<Self>, at: fn(u64) -> Self, batch: u64) -> bool {
        this == Some(at(batch))
    }

    /// SIGKILLs this process when `this` is the fault `at` the `batch`th
    /// batch.
    pub fn crash_if(this: Option<Self>, at: fn(u64) -> Self, batch: u64) {
        if Self::due(this, at, batch) {
            tracing::warn!("OOM_PROBE_FAULT: crashing at {:?}", at(batch));
            // SAFETY: kill and getpid have no memory-safety preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_two_points_and_nothing_else() {
        assert_eq!(
            Fault::parse("crash-after-commit:3"),
            Some(Fault::AfterCommit(3))
        );
        assert_eq!(
            Fault::parse("crash-after-print:1"),
            Some(Fault::AfterPrint(1))
        );
        for bad in ["", "crash-after-commit", "crash-after-commit:x", "crash:1"] {
            assert_eq!(Fault::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn is_due_only_at_its_point_and_batch() {
        let fault = Some(Fault::AfterCommit(2));
        assert!(Fault::due(fault, Fault::AfterCommit, 2));
        assert!(!Fault::due(fault, Fault::AfterCommit, 1));
        assert!(!Fault::due(fault, Fault::AfterPrint, 2));
        assert!(!Fault::due(None, Fault::AfterPrint, 2));
    }
}
