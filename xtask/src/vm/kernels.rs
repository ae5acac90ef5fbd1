//! The kernels of the VM matrix: the newest Debian cloud kernel of each
//! series and architecture, fetched from apt once and cached as a bare
//! vmlinuz.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{
    apt::{Apt, Suite},
    arch::Arch,
};

/// Debian 11's own archive, without its security suite: its last point
/// release (11.11) ships 5.10.223 (`5.10.0-32`), whose `mark_victim` still
/// passes only the victim's pid. The newer 5.10 kernels of
/// bullseye-security have the 6.9 format backported, so taking them would
/// test nothing the 6.x kernels do not already.
pub const BULLSEYE: Suite = Suite {
    name: "bullseye",
    sources: "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
              http://deb.debian.org/debian bullseye main\n",
};

/// Debian 12 with its updates and security suites (where the 6.12 kernels
/// for bookworm are): the machine's own release, named for the
/// architectures the machine's apt does not fetch.
pub const BOOKWORM: Suite = Suite {
    name: "bookworm",
    sources: "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
              http://deb.debian.org/debian bookworm main\n\
              deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
              http://deb.debian.org/debian bookworm-updates main\n\
              deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
              http://deb.debian.org/debian-security bookworm-security main\n",
};

/// The series the matrix boots, and where each comes from (`None`: the
/// machine's own apt sources): Debian 11's 5.10 (the `mark_victim(pid)`
/// format), Debian 12's own kernel and the newer one it ships for bookworm;
/// oom-probe's hooks and offsets differ between them.
pub const SERIES: [(&str, Option<Suite>); 3] =
    [("5.10", Some(BULLSEYE)), ("6.1", None), ("6.12", None)];

/// The series of `arch` and their suites: [`SERIES`] for the host's own
/// architecture; for another, every suite named, since the machine's apt
/// lists hold only its own architecture (the private apt of [`Apt::private`]
/// fetches the other's).
pub fn series(arch: Arch) -> [(&'static str, Option<Suite>); 3] {
    if arch == Arch::host() {
        return SERIES;
    }
    SERIES.map(|(series, suite)| (series, Some(suite.unwrap_or(BOOKWORM))))
}

/// One kernel of the matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// The series it belongs to, one of [`SERIES`].
    pub series: &'static str,
    /// Its release, as in `uname -r`: `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The suite it comes from when not the machine's own sources.
    pub suite: Option<Suite>,
    /// The architecture it runs on.
    pub arch: Arch,
}

impl Kernel {
    /// The cached vmlinuz, downloaded and unpacked on first use only.
    pub fn vmlinuz(&self, apt: &mut Apt, cache: &Path) -> Result<PathBuf> {
        let release = &self.release;
        let mut private;
        let apt = match self.suite {
            Some(suite) => {
                private = Apt::private(suite, self.arch, cache)?;
                &mut private
            }
            None => apt,
        };
        apt.cached_file(
            &format!("linux-image-{release}"),
            &format!("boot/vmlinuz-{release}"),
            &cache.join(format!("vmlinuz-{release}")),
        )
    }
}

/// The newest kernel of every series of `arch` in its apt suites; `apt` is
/// the machine's, `cache` holds the private configuration of other suites.
pub fn newest(apt: &mut Apt, arch: Arch, cache: &Path) -> Result<Vec<Kernel>> {
    let flavour = format!("cloud-{}", arch.debian());
    series(arch)
        .iter()
        .map(|&(series, suite)| {
            let regex = format!(
                "^linux-image-{}\\.[0-9].*-{flavour}$",
                series.replace('.', "\\.")
            );
            let found = match suite {
                Some(suite) => Apt::private(suite, arch, cache)?.search(&regex)?,
                None => apt.search(&regex)?,
            };
            match newest_release(&found, series, &flavour) {
                Some(release) => Ok(Kernel {
                    series,
                    release,
                    suite,
                    arch,
                }),
                None if suite.is_some() => bail!(
                    "no linux-image-{series}.*-{flavour} package in {}",
                    suite.map_or("", |s| s.sources).trim()
                ),
                None => bail!(
                    "no linux-image-{series}.*-cloud-amd64 package in the configured apt suites. \
                     Debian ships 6.1 in bookworm (and bookworm-updates, bookworm-security), and \
                     6.12 for bookworm in bookworm-security (6.12.*+deb12-cloud-amd64) and \
                     bookworm-backports (6.12.*+bpo-cloud-amd64): add the missing suite to \
                     /etc/apt/sources.list.d and run apt-get update"
                ),
            }
        })
        .collect()
}

/// The kernels `filter` picks: those of the series named exactly `filter`
/// if there are any (so `6.1` is not also `6.12`), else those whose release
/// contains it; all of them without a filter.
pub fn select(kernels: Vec<Kernel>, filter: Option<&str>) -> Result<Vec<Kernel>> {
    let Some(filter) = filter else {
        return Ok(kernels);
    };
    let by_series: Vec<Kernel> = kernels
        .iter()
        .filter(|k| k.series == filter)
        .cloned()
        .collect();
    if !by_series.is_empty() {
        return Ok(by_series);
    }
    let by_release: Vec<Kernel> = kernels
        .iter()
        .filter(|k| k.release.contains(filter))
        .cloned()
        .collect();
    if by_release.is_empty() {
        let known: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
        bail!("--kernel {filter} matches none of {}", known.join(", "));
    }
    Ok(by_release)
}

/// The newest release of `series` and `flavour` (`cloud-amd64`) among the
/// `linux-image-<release> - <text>` lines that `apt-cache search` prints, in
/// no particular order.
fn newest_release(search_output: &str, series: &str, flavour: &str) -> Option<String> {
    let prefix = format!("{series}.");
    let suffix = format!("-{flavour}");
    search_output
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.strip_prefix("linux-image-"))
        .filter(|release| release.starts_with(&prefix) && release.ends_with(&suffix))
        .max_by_key(|release| version_key(release))
        .map(String::from)
}

/// The numbers in a release, in order: `6.1.0-56-cloud-amd64` is
/// [6, 1, 0, 56, 64] and `6.12.117+deb12-…` is [6, 12, 117, 12, 64], which
/// order releases of one series the way Debian numbers them.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `apt-cache search` output from bookworm, in its own order.
    const SEARCH: &str = "\
linux-image-6.1.0-47-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-50-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.12.100+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.99+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.1.0-56-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-9-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-56-cloud-amd64-dbg - Debug symbols for linux-image-6.1.0-56-cloud-amd64
";

    fn kernel(series: &'static str, release: &str) -> Kernel {
        Kernel {
            series,
            release: release.into(),
            suite: None,
            arch: Arch::Amd64,
        }
    }

    #[test]
    fn picks_the_newest_release_of_each_series() {
        assert_eq!(
            newest_release(SEARCH, "6.1", "cloud-amd64").as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest_release(SEARCH, "6.12", "cloud-amd64").as_deref(),
            Some("6.12.117+deb12-cloud-amd64")
        );
    }

    #[test]
    fn backports_kernels_count_too() {
        let search = "linux-image-6.12.38+bpo-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)\n";
        assert_eq!(
            newest_release(search, "6.12", "cloud-amd64").as_deref(),
            Some("6.12.38+bpo-cloud-amd64")
        );
    }

    /// Real `apt-cache search` output from bullseye main: 5.10 releases
    /// numbered 30 and 32 must order by number, not text.
    #[test]
    fn picks_the_newest_bullseye_kernel() {
        let search = "\
linux-image-5.10.0-32-cloud-amd64 - Linux 5.10 for x86-64 cloud (signed)
linux-image-5.10.0-30-cloud-amd64 - Linux 5.10 for x86-64 cloud (signed)
linux-image-5.10.0-32-cloud-amd64-dbg - Debug symbols for linux-image-5.10.0-32-cloud-amd64
";
        assert_eq!(
            newest_release(search, "5.10", "cloud-amd64").as_deref(),
            Some("5.10.0-32-cloud-amd64")
        );
    }

    /// Real `apt-cache search` output of the arm64 lists of bookworm: the
    /// flavour keeps the architectures apart.
    #[test]
    fn picks_the_newest_arm64_kernel() {
        let search = "\
linux-image-6.12.118+deb12-cloud-arm64 - Linux 6.12 for arm64 cloud (signed)
linux-image-6.12.117+deb12-cloud-arm64 - Linux 6.12 for arm64 cloud (signed)
linux-image-6.12.119+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
";
        assert_eq!(
            newest_release(search, "6.12", "cloud-arm64").as_deref(),
            Some("6.12.118+deb12-cloud-arm64")
        );
        assert_eq!(
            newest_release(search, "6.12", "cloud-amd64").as_deref(),
            Some("6.12.119+deb12-cloud-amd64")
        );
    }

    #[test]
    fn another_architecture_names_every_suite() {
        assert_eq!(series(Arch::host()), SERIES);
        let arm64 = series(Arch::Arm64);
        assert_eq!(arm64[0], ("5.10", Some(BULLSEYE)));
        assert_eq!(arm64[1], ("6.1", Some(BOOKWORM)));
        assert_eq!(arm64[2], ("6.12", Some(BOOKWORM)));
    }

    #[test]
    fn a_missing_series_is_none() {
        assert_eq!(newest_release(SEARCH, "6.6", "cloud-amd64"), None);
        assert_eq!(newest_release("", "6.1", "cloud-amd64"), None);
    }

    #[test]
    fn selects_by_exact_series_before_substring() {
        let kernels = vec![
            kernel("6.1", "6.1.0-56-cloud-amd64"),
            kernel("6.12", "6.12.117+deb12-cloud-amd64"),
        ];
        let select = |filter| select(kernels.clone(), filter).unwrap();
        assert_eq!(select(None), kernels);
        assert_eq!(select(Some("6.1")), kernels[..1]);
        assert_eq!(select(Some("6.12")), kernels[1..]);
        assert_eq!(select(Some("117")), kernels[1..]);
        assert_eq!(select(Some("cloud")), kernels);
        assert!(super::select(kernels.clone(), Some("5.10")).is_err());
    }
}
