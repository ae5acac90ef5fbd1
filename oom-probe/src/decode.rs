//! Turns ring-buffer bytes into typed records.
//!
//! The records are `#[repr(C)]` plain data shared with the eBPF side, so a
//! length check and one unaligned read is the whole decoder; anything short
//! or unknown is rejected with a reason instead of being guessed at.

use std::mem::size_of;

use oom_probe_common::{
    ExitRecord, OomContextRecord, VictimRecord, RECORD_KILLER_EXIT, RECORD_OOM_CONTEXT,
    RECORD_OOM_MARK, RECORD_USERSPACE_KILL, RECORD_VICTIM,
};

/// One record from the kernel, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A process the kernel OOM killer chose.
    Victim(VictimRecord),
    /// The kernel's OOM decision (kernels with kprobes or fentry).
    OomContext(OomContextRecord),
    /// A SIGKILL or SIGTERM (`signal`) from a userspace OOM killer;
    /// `trigger_*` is the killer.
    UserspaceKill(VictimRecord),
    /// A task the kernel OOM killer chose but only marked, because it was
    /// already exiting: no SIGKILL, no `oom_kill` count. Not a kill.
    OomMark(VictimRecord),
    /// The end of a process a userspace OOM killer sent SIGTERM to.
    KillerExit(ExitRecord),
}

/// Why bytes from the ring buffer could not be decoded; counted by the
/// caller so a mismatch between loader and program shows up.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the record's type needs (`kind` 0: not even a kind).
    #[error("record of kind {kind} has {len} bytes, needs {need}")]
    Short { kind: u32, len: usize, need: usize },
    /// A record kind this build does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .ok_or(DecodeError::Short {
            kind: 0,
            len: bytes.len(),
            need: 4,
        })?;
    match kind {
        RECORD_VICTIM => read_pod::<VictimRecord>(kind, bytes).map(Record::Victim),
        RECORD_OOM_CONTEXT => read_pod::<OomContextRecord>(kind, bytes).map(Record::OomContext),
        RECORD_USERSPACE_KILL => read_pod::<VictimRecord>(kind, bytes).map(Record::UserspaceKill),
        RECORD_OOM_MARK => read_pod::<VictimRecord>(kind, bytes).map(Record::OomMark),
        RECORD_KILLER_EXIT => read_pod::<ExitRecord>(kind, bytes).map(Record::KillerExit),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Marks the record types for which every bit pattern is a valid value.
trait PlainData: Copy {}
impl PlainData for VictimRecord {}
impl PlainData for OomContextRecord {}
impl PlainData for ExitRecord {}

fn read_pod<T: PlainData>(kind: u32, bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: the length is checked and T is plain data (integers and byte
    // arrays only), so any bytes form a valid T; read_unaligned copes with
    // the ring buffer's 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of a record, as the eBPF side writes them.
    fn as_bytes<T: PlainData>(record: &T) -> Vec<u8> {
        // SAFETY: T is plain data; reading its bytes is always valid.
        unsafe { std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn victim_round_trips() {
        let victim = VictimRecord {
            kind: RECORD_VICTIM,
            tgid: 4121,
            tid: 4122,
            ns_pid: 7,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            rss_anon_pages: 1000,
            ..Default::default()
        };
        assert_eq!(decode(&as_bytes(&victim)), Ok(Record::Victim(victim)));
        let killed = VictimRecord {
            kind: RECORD_USERSPACE_KILL,
            ..victim
        };
        assert_eq!(
            decode(&as_bytes(&killed)),
            Ok(Record::UserspaceKill(killed))
        );
        let marked = VictimRecord {
            kind: RECORD_OOM_MARK,
            ..victim
        };
        assert_eq!(decode(&as_bytes(&marked)), Ok(Record::OomMark(marked)));
        let exit = ExitRecord {
            kind: RECORD_KILLER_EXIT,
            exit_code: 15,
            kernel_time_ns: 9,
            tgid: 4121,
            _pad: 0,
        };
        assert_eq!(decode(&as_bytes(&exit)), Ok(Record::KillerExit(exit)));
        let short = as_bytes(&exit);
        assert!(matches!(
            decode(&short[..short.len() - 1]),
            Err(DecodeError::Short {
                kind: RECORD_KILLER_EXIT,
                ..
            })
        ));
    }

    #[test]
    fn context_round_trips_from_unaligned_bytes() {
        let context = OomContextRecord {
            kind: RECORD_OOM_CONTEXT,
            constraint: 1,
            totalpages: 8192,
            memcg_id: 5,
            ..Default::default()
        };
        let mut bytes = vec![0u8];
        bytes.extend(as_bytes(&context));
        assert_eq!(decode(&bytes[1..]), Ok(Record::OomContext(context)));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let victim = VictimRecord {
            kind: RECORD_VICTIM,
            ..Default::default()
        };
        let bytes = as_bytes(&victim);
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Short {
                kind: RECORD_VICTIM,
                ..
            })
        ));
        assert_eq!(
            decode(&[1, 2]),
            Err(DecodeError::Short {
                kind: 0,
                len: 2,
                need: 4
            })
        );
        assert_eq!(
            decode(&77u32.to_ne_bytes()),
            Err(DecodeError::UnknownKind(77))
        );
    }
}
