//! A userspace OOM killer's signals joined to how their target ended
//! (docs/decisions, "a killer's SIGTERM is a kill when the process ends").
//!
//! A SIGKILL is a kill at once. A SIGTERM is held until one of:
//! - the process ends (its leader's `sched_process_exit`) within
//!   [`SIGTERM_WINDOW_NS`] of the killer's last signal, not by a SIGKILL:
//!   a kill, reported then with the SIGTERM's figures and how it ended;
//! - the killer's SIGKILL to it: one kill, the SIGKILL (the process
//!   ignored the SIGTERM);
//! - the kernel OOM killer kills it: that `oom_kill` is the kill;
//! - the window passes, or the process ends by someone else's SIGKILL: it
//!   survived the SIGTERM, no kill (logged at debug level).
//!
//! Pure: fed records, it says which record to report and how.

use std::collections::HashMap;

use oom_probe_common::{ExitRecord, VictimRecord, KILLER_TARGETS_ENTRIES, SIGKILL, SIGTERM};

use crate::event::{KillSignal, VictimExit};

/// How long after a killer's SIGTERM the process's end still counts as
/// the SIGTERM's doing: earlyoom waits 10 s for its SIGTERM's target to
/// exit before it signals again; three times that.
pub const SIGTERM_WINDOW_NS: u64 = 30_000_000_000;

/// SIGTERMs held at most (as many as the kernel keeps targets for); the
/// oldest is let go first.
const MAX_HELD: usize = KILLER_TARGETS_ENTRIES as usize;

/// A userspace kill to report: the killer's signal record, the signal
/// that ended the process, and for a SIGTERM how it ended.
#[derive(Debug, PartialEq)]
pub struct Joined {
    /// The record of the signal reported (its figures are the event's).
    pub record: VictimRecord,
    pub signal: KillSignal,
    pub exit: Option<VictimExit>,
    /// For a SIGKILL, the held SIGTERM it followed (kernel time, ns).
    pub sigterm_before_ns: Option<u64>,
}

/// The SIGTERMs held, by target tgid.
#[derive(Debug, Default)]
pub struct KillerSignals {
    held: HashMap<u32, VictimRecord>,
}

impl KillerSignals {
    /// A userspace killer's signal record: a SIGKILL is reported now (and
    /// ends a held SIGTERM to the same process); a SIGTERM is held (the
    /// latest one per process), `None`.
    pub fn on_signal(&mut self, record: VictimRecord) -> Option<Joined> {
        self.expire(record.kernel_time_ns);
        if record.signal == SIGTERM {
            if self.held.len() >= MAX_HELD && !self.held.contains_key(&record.tgid) {
                self.let_go_oldest();
            }
            self.held.insert(record.tgid, record);
            return None;
        }
        let before = self.held.remove(&record.tgid);
        Some(Joined {
            record,
            signal: KillSignal::Sigkill,
            exit: None,
            sigterm_before_ns: before.map(|r| r.kernel_time_ns),
        })
    }

    /// The end of a process a killer sent SIGTERM to: the kill to report,
    /// if the SIGTERM is still held and the end is not someone else's
    /// SIGKILL.
    pub fn on_exit(&mut self, exit: &ExitRecord) -> Option<Joined> {
        self.expire(exit.kernel_time_ns);
        let record = self.held.remove(&exit.tgid)?;
        let how = ending(exit.exit_code);
        if how.signal.as_deref() == Some(signal_name(SIGKILL).as_str()) {
            tracing::debug!(
                "pid {} survived a userspace OOM killer's SIGTERM and then died of a SIGKILL \
                 that was not the killer's: no userspace kill",
                exit.tgid
            );
            return None;
        }
        Some(Joined {
            record,
            signal: KillSignal::Sigterm,
            exit: Some(how),
            sigterm_before_ns: None,
        })
    }

    /// The kernel OOM killer killed `tgid`: a SIGTERM held for it is no
    /// longer a kill of its own.
    pub fn on_kernel_kill(&mut self, tgid: u32) {
        self.held.remove(&tgid);
    }

    /// SIGTERMs held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Lets go the SIGTERMs sent more than [`SIGTERM_WINDOW_NS`] before
    /// `now_ns`: their processes survived them.
    fn expire(&mut self, now_ns: u64) {
        self.held.retain(|tgid, r| {
            let live = now_ns.saturating_sub(r.kernel_time_ns) <= SIGTERM_WINDOW_NS;
            if !live {
                tracing::debug!(
                    "pid {tgid} survived a userspace OOM killer's SIGTERM: no userspace kill"
                );
            }
            live
        });
    }

    fn let_go_oldest(&mut self) {
        if let Some(&oldest) = self
            .held
            .iter()
            .min_by_key(|(_, r)| r.kernel_time_ns)
            .map(|(tgid, _)| tgid)
        {
            self.held.remove(&oldest);
        }
    }
}

/// How a process ended, from its `exit_code` (the encoding of `wait(2)`):
/// the terminating signal in bits 0-6, else the exit status in bits 8-15.
pub fn ending(exit_code: u32) -> VictimExit {
    match exit_code & 0x7f {
        0 => VictimExit {
            signal: None,
            code: Some((exit_code >> 8) & 0xff),
        },
        signal => VictimExit {
            signal: Some(signal_name(signal)),
            code: None,
        },
    }
}

/// The name of signal `n` as Linux numbers them on x86, arm64 and most
/// others (`SIG<n>` for the real-time ones and unknown numbers).
pub fn signal_name(n: u32) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match n {
        1..=31 => NAMES[n as usize - 1].to_string(),
        _ => format!("SIG{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oom_probe_common::{RECORD_KILLER_EXIT, RECORD_USERSPACE_KILL};

    const S: u64 = 1_000_000_000;

    fn signal(tgid: u32, signal: u32, at: u64) -> VictimRecord {
        VictimRecord {
            kind: RECORD_USERSPACE_KILL,
            tgid,
            tid: tgid,
            signal,
            kernel_time_ns: at,
            ..Default::default()
        }
    }

    fn exit(tgid: u32, exit_code: u32, at: u64) -> ExitRecord {
        ExitRecord {
            kind: RECORD_KILLER_EXIT,
            exit_code,
            kernel_time_ns: at,
            tgid,
            _pad: 0,
        }
    }

    #[test]
    fn a_sigterm_the_process_dies_of_is_a_kill_at_its_end() {
        let mut k = KillerSignals::default();
        assert_eq!(k.on_signal(signal(10, SIGTERM, 100 * S)), None);
        assert_eq!(k.held(), 1);
        let joined = k.on_exit(&exit(10, SIGTERM, 101 * S)).unwrap();
        assert_eq!(joined.signal, KillSignal::Sigterm);
        assert_eq!(
            joined.record.kernel_time_ns,
            100 * S,
            "the signal's figures"
        );
        assert_eq!(
            joined.exit,
            Some(VictimExit {
                signal: Some("SIGTERM".into()),
                code: None
            })
        );
        assert_eq!(k.held(), 0);
        assert_eq!(k.on_exit(&exit(10, SIGTERM, 102 * S)), None, "once");
    }

    #[test]
    fn a_sigterm_handled_then_exit_is_a_kill_with_the_status() {
        let mut k = KillerSignals::default();
        k.on_signal(signal(11, SIGTERM, S));
        let joined = k.on_exit(&exit(11, 3 << 8, 5 * S)).unwrap();
        assert_eq!(
            joined.exit,
            Some(VictimExit {
                signal: None,
                code: Some(3)
            })
        );
    }

    #[test]
    fn a_sigterm_ignored_then_sigkill_is_one_kill_the_sigkill() {
        let mut k = KillerSignals::default();
        assert_eq!(k.on_signal(signal(12, SIGTERM, S)), None);
        let joined = k.on_signal(signal(12, SIGKILL, 3 * S)).unwrap();
        assert_eq!(joined.signal, KillSignal::Sigkill);
        assert_eq!(joined.record.kernel_time_ns, 3 * S);
        assert_eq!(joined.sigterm_before_ns, Some(S));
        assert_eq!(joined.exit, None);
        // Its end, by the SIGKILL, reports nothing more.
        assert_eq!(k.on_exit(&exit(12, SIGKILL, 3 * S + 1)), None);
    }

    #[test]
    fn a_survived_sigterm_is_no_kill() {
        let mut k = KillerSignals::default();
        k.on_signal(signal(13, SIGTERM, S));
        // Ends 31 s later: the window is over.
        assert_eq!(k.on_exit(&exit(13, SIGTERM, 32 * S)), None);
        // Dies of someone else's SIGKILL within the window.
        k.on_signal(signal(14, SIGTERM, 40 * S));
        assert_eq!(k.on_exit(&exit(14, SIGKILL, 41 * S)), None);
        // The kernel OOM killer's kill is its own event.
        k.on_signal(signal(15, SIGTERM, 50 * S));
        k.on_kernel_kill(15);
        assert_eq!(k.on_exit(&exit(15, SIGTERM, 51 * S)), None);
        assert_eq!(k.held(), 0);
    }

    #[test]
    fn the_latest_sigterm_counts_and_the_window_runs_from_it() {
        let mut k = KillerSignals::default();
        k.on_signal(signal(16, SIGTERM, S));
        k.on_signal(signal(16, SIGTERM, 25 * S));
        let joined = k.on_exit(&exit(16, SIGTERM, 50 * S)).unwrap();
        assert_eq!(joined.record.kernel_time_ns, 25 * S);
    }

    #[test]
    fn held_sigterms_are_bounded_oldest_out() {
        let mut k = KillerSignals::default();
        for tgid in 0..MAX_HELD as u32 + 1 {
            k.on_signal(signal(tgid + 1, SIGTERM, S + u64::from(tgid)));
        }
        assert_eq!(k.held(), MAX_HELD);
        assert_eq!(k.on_exit(&exit(1, SIGTERM, 2 * S)), None, "the oldest went");
        assert!(k.on_exit(&exit(2, SIGTERM, 2 * S)).is_some());
    }

    #[test]
    fn exit_codes_read_as_wait_does() {
        assert_eq!(ending(0).code, Some(0));
        assert_eq!(ending(143 << 8).code, Some(143));
        assert_eq!(ending(6 | 0x80).signal.as_deref(), Some("SIGABRT"));
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(34), "SIG34");
    }
}
