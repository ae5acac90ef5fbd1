//! The resolved [`KernelLayout`] kept between runs on the same boot, so a
//! restart of oom-probe does not read and parse the kernel's BTF again
//! (about 5.5 MB; the parse is most of a cold start-up and of its peak RSS).
//!
//! The file (default [`DEFAULT_PATH`], in /run: a tmpfs emptied at reboot)
//! holds the offsets with what they were resolved for: the boot (the
//! kernel's `boot_id`), the kernel release and the size of its BTF, and the
//! build of the resolver (a hash of its source, fixed at compile time). Any
//! difference, an unreadable or malformed file, or a missing field is a
//! miss: the BTF is parsed as if there were no cache, and the file is
//! written again. Never an error: a cache that cannot be read or written
//! only costs the parse.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use oom_probe_common::KernelOffsets;
use serde::{Deserialize, Serialize};

use super::kernel_offsets::{KernelLayout, VMLINUX_BTF};
use crate::event::Constraint;

/// Where `watch` and `run` keep the layout unless `--layout-cache` says
/// otherwise.
pub const DEFAULT_PATH: &str = "/run/oom-probe/kernel-layout.json";

/// Bumped when the meaning of a field of the file changes.
const FORMAT: u32 = 1;

/// A hash of the sources that decide the layout (the resolver and the
/// offsets struct), so a build that resolves differently never takes an
/// older build's file.
const BUILD: u64 = fnv1a(
    fnv1a(FNV_OFFSET, include_bytes!("kernel_offsets.rs")),
    include_bytes!("../../../oom-probe-common/src/lib.rs"),
);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `KernelOffsets` is all `u32` fields and `repr(C)`: stored as their list.
const OFFSET_WORDS: usize = size_of::<KernelOffsets>() / 4;
const _: () = assert!(size_of::<KernelOffsets>().is_multiple_of(4));

/// What the running kernel is, cheaply (no read of its BTF): the layout of a
/// boot never changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelIdentity {
    /// `/proc/sys/kernel/random/boot_id`: new at every boot.
    pub boot_id: String,
    /// `uname -r`.
    pub release: String,
    /// Size in bytes of [`VMLINUX_BTF`].
    pub btf_bytes: u64,
}

impl KernelIdentity {
    /// Reads the identity of the running kernel; `None` where any part is
    /// unreadable (then nothing is cached).
    pub fn current() -> Option<Self> {
        let boot_id = crate::boot::boot_id()?;
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        let btf_bytes = std::fs::metadata(VMLINUX_BTF).ok()?.len();
        Some(Self {
            boot_id,
            release: release.trim().to_owned(),
            btf_bytes,
        })
    }
}

/// The file's content.
#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    build: String,
    kernel: KernelIdentity,
    offsets: Vec<u32>,
    missing: Vec<String>,
    constraints: Vec<(u32, Constraint)>,
    oom_kill_process_btf_id: Option<u32>,
}

/// The layout cache at one path.
pub struct LayoutCache {
    path: PathBuf,
    kernel: Option<KernelIdentity>,
}

impl LayoutCache {
    /// The cache at `path`, for the running kernel.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            kernel: KernelIdentity::current(),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored layout if it was resolved for this kernel, boot and
    /// build; `None` on any miss.
    pub fn load(&self) -> Option<KernelLayout> {
        let kernel = self.kernel.as_ref()?;
        let bytes = std::fs::read(&self.path).ok()?;
        let stored: Stored = serde_json::from_slice(&bytes).ok()?;
        if stored.format != FORMAT
            || stored.build != build_key()
            || &stored.kernel != kernel
            || stored.offsets.len() != OFFSET_WORDS
        {
            return None;
        }
        let mut offsets = KernelOffsets::default();
        // SAFETY: KernelOffsets is repr(C) and made of OFFSET_WORDS u32
        // fields (asserted above), so it is exactly that many u32s, and
        // every bit pattern is valid.
        unsafe {
            std::ptr::copy_nonoverlapping(
                stored.offsets.as_ptr(),
                (&raw mut offsets).cast::<u32>(),
                OFFSET_WORDS,
            );
        }
        Some(KernelLayout {
            offsets,
            missing: stored.missing,
            constraint_names: stored.constraints.into_iter().collect::<HashMap<_, _>>(),
            oom_kill_process_btf_id: stored.oom_kill_process_btf_id,
        })
    }

    /// Writes `layout` for this kernel (a new file renamed into place, so a
    /// reader never sees half of it).
    pub fn store(&self, layout: &KernelLayout) -> Result<()> {
        let kernel = self
            .kernel
            .clone()
            .context("the kernel's boot id, release or BTF size is unreadable")?;
        // SAFETY: as in `load`.
        let words = unsafe {
            std::slice::from_raw_parts((&raw const layout.offsets).cast::<u32>(), OFFSET_WORDS)
        };
        let mut constraints: Vec<_> = layout
            .constraint_names
            .iter()
            .map(|(&v, &c)| (v, c))
            .collect();
        constraints.sort_by_key(|&(v, _)| v);
        let stored = Stored {
            format: FORMAT,
            build: build_key(),
            kernel,
            offsets: words.to_vec(),
            missing: layout.missing.clone(),
            constraints,
            oom_kill_process_btf_id: layout.oom_kill_process_btf_id,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&stored)?)?;
            std::fs::rename(&tmp, &self.path)?;
            Ok(())
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn build_key() -> String {
    format!("{}-{BUILD:016x}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> KernelLayout {
        let offsets = KernelOffsets {
            features: 0x7f,
            task_pid: 1264,
            oom_control_constraint: 56,
            ..KernelOffsets::default()
        };
        KernelLayout {
            offsets,
            missing: vec!["pid namespace pid: no struct upid".into()],
            constraint_names: [(0, Constraint::Global), (3, Constraint::Memcg)].into(),
            oom_kill_process_btf_id: Some(99178),
        }
    }

    fn cache(dir: &Path, boot_id: &str) -> LayoutCache {
        LayoutCache {
            path: dir.join("sub/kernel-layout.json"),
            kernel: Some(KernelIdentity {
                boot_id: boot_id.into(),
                release: "6.18.44".into(),
                btf_bytes: 5_515_236,
            }),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oom-probe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_stored_layout_comes_back_whole_for_the_same_kernel_only() {
        let dir = temp_dir("layout-cache");
        let first = cache(&dir, "a");
        assert!(first.load().is_none(), "nothing stored yet");
        first.store(&layout()).unwrap();
        let back = first.load().expect("stored for this kernel");
        let want = layout();
        assert_eq!(back.offsets, want.offsets);
        assert_eq!(back.missing, want.missing);
        assert_eq!(back.constraint_names, want.constraint_names);
        assert_eq!(back.oom_kill_process_btf_id, Some(99178));
        // Another boot (or kernel) never takes it.
        assert!(cache(&dir, "b").load().is_none());
        // A malformed file is a miss, not an error.
        std::fs::write(first.path(), b"{\"format\":1").unwrap();
        assert!(first.load().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_running_kernel_has_an_identity() {
        // Every Linux with /proc has these two; the BTF size only where the
        // kernel has BTF.
        if std::path::Path::new(VMLINUX_BTF).exists() {
            let kernel = KernelIdentity::current().expect("identity");
            assert_eq!(kernel.boot_id.len(), 36, "{kernel:?}");
            assert!(kernel.btf_bytes > 0);
        }
    }
}
