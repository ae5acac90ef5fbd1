//! A writer for the "newc" cpio format, the one the kernel unpacks an
//! initramfs from. Writing it here needs no `cpio` package on the host and
//! yields one uncompressed archive, which the kernel always accepts (an
//! uncompressed cpio appended to a compressed one is silently dropped unless
//! it starts 4-byte aligned).

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes an archive entry by entry; [`CpioWriter::finish`] ends it. Owner,
/// group and modification time are always 0, so the same inputs give the
/// same bytes.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

/// The fields of one entry that vary between entries.
struct Entry<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &'a [u8],
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    /// A directory (mode 0755). Parents must come before their children.
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        self.entry(Entry {
            name: path,
            mode: S_IFDIR | 0o755,
            nlink: 2,
            rdev: (0, 0),
            data: &[],
        })
    }

    /// A regular file with permission bits `permissions` (e.g. 0o755).
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> io::Result<()> {
        self.entry(Entry {
            name: path,
            mode: S_IFREG | permissions,
            nlink: 1,
            rdev: (0, 0),
            data,
        })
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(Entry {
            name: path,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            rdev: (0, 0),
            data: target.as_bytes(),
        })
    }

    /// A character device node, e.g. `dev/console` (5, 1), which the kernel
    /// opens for PID 1's standard streams before any devtmpfs is mounted.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.entry(Entry {
            name: path,
            mode: S_IFCHR | permissions,
            nlink: 1,
            rdev: (major, minor),
            data: &[],
        })
    }

    /// Writes the trailer, pads the archive to a 512-byte block and returns
    /// the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_inode = 0;
        self.entry(Entry {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            rdev: (0, 0),
            data: &[],
        })?;
        self.pad_to(512)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, entry: Entry) -> io::Result<()> {
        let name = entry.name.trim_start_matches('/');
        let fields = [
            self.next_inode,
            entry.mode,
            0, // uid
            0, // gid
            entry.nlink,
            0, // mtime
            u32::try_from(entry.data.len()).map_err(io::Error::other)?,
            0, // device major
            0, // device minor
            entry.rdev.0,
            entry.rdev.1,
            u32::try_from(name.len() + 1).map_err(io::Error::other)?,
            0, // checksum, unused by "newc"
        ];
        self.next_inode += 1;
        let header: String = fields.iter().map(|f| format!("{f:08x}")).collect();
        self.write(MAGIC.as_bytes())?;
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad_to(4)?;
        self.write(entry.data)?;
        self.pad_to(4)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, alignment: u64) -> io::Result<()> {
        let padding = (alignment - self.written % alignment) % alignment;
        self.write(&vec![0; padding as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry read back: (name, mode, rdev major, rdev minor, data).
    type Parsed = (String, u32, u32, u32, Vec<u8>);

    /// A minimal "newc" reader that also checks the alignment rules.
    fn parse(mut archive: &[u8]) -> Vec<Parsed> {
        let total = archive.len();
        let mut entries = Vec::new();
        loop {
            let offset = total - archive.len();
            assert_eq!(offset % 4, 0, "header at {offset} is not 4-byte aligned");
            assert_eq!(&archive[..6], MAGIC.as_bytes());
            let field = |i: usize| {
                let hex = std::str::from_utf8(&archive[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(hex, 16).unwrap()
            };
            let (mode, size, rmajor, rminor, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name = std::str::from_utf8(&archive[110..110 + namesize as usize - 1]).unwrap();
            assert_eq!(
                archive[110 + namesize as usize - 1],
                0,
                "name not NUL-terminated"
            );
            let data_start = (110 + namesize as usize).next_multiple_of(4);
            let data = archive[data_start..data_start + size as usize].to_vec();
            if name == TRAILER {
                return entries;
            }
            entries.push((name.to_string(), mode, rmajor, rminor, data));
            archive = &archive[(data_start + size as usize).next_multiple_of(4)..];
        }
    }

    fn sample() -> Vec<u8> {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.dir("/bin").unwrap();
        cpio.file("bin/hello", 0o755, b"hello world").unwrap();
        cpio.symlink("bin/sh", "busybox").unwrap();
        cpio.char_device("dev/console", 0o600, 5, 1).unwrap();
        cpio.finish().unwrap()
    }

    #[test]
    fn entries_read_back() {
        let entries = parse(&sample());
        assert_eq!(
            entries,
            vec![
                ("bin".into(), 0o040_755, 0, 0, vec![]),
                ("bin/hello".into(), 0o100_755, 0, 0, b"hello world".to_vec()),
                ("bin/sh".into(), 0o120_777, 0, 0, b"busybox".to_vec()),
                ("dev/console".into(), 0o020_600, 5, 1, vec![]),
            ]
        );
    }

    #[test]
    fn header_matches_the_newc_layout() {
        let archive = sample();
        let expected = concat!(
            "070701", "00000001", "000041ed", "00000000", "00000000", "00000002", "00000000",
            "00000000", "00000000", "00000000", "00000000", "00000000", "00000004", "00000000",
            "bin\0",
        );
        assert_eq!(&archive[..expected.len()], expected.as_bytes());
    }

    #[test]
    fn archive_ends_on_a_block_with_the_trailer() {
        let archive = sample();
        assert_eq!(archive.len() % 512, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("TRAILER!!!\0"));
    }
}
