//! This boot's identity: the kernel's `boot_id`, new at every boot. It tells
//! a state file or a cached kernel layout from another boot, and its first 8
//! hex digits begin every event id.

/// Where the kernel publishes this boot's id (a random UUID).
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id (`/proc/sys/kernel/random/boot_id`, a UUID, trimmed);
/// `None` when it cannot be read.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|id| id.trim().to_owned())
}

/// The first 8 hex digits of this boot's id, the first part of every event
/// id; `00000000` when it cannot be read.
pub fn short_boot_id() -> String {
    short(&boot_id().unwrap_or_default())
}

/// The first 8 hex digits of `boot_id`, `00000000` when it has fewer.
fn short(boot_id: &str) -> String {
    let id: String = boot_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    if id.len() == 8 {
        id
    } else {
        "00000000".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_id_is_the_first_eight_hex_digits() {
        assert_eq!(short("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n"), "0f1e2d3c");
        assert_eq!(short("0f1e-2d3c-4b5a"), "0f1e2d3c");
        assert_eq!(short(""), "00000000");
        assert_eq!(short("0f1e"), "00000000");
    }

    #[test]
    fn this_boot_has_an_id() {
        let id = boot_id().expect("Linux has /proc/sys/kernel/random/boot_id");
        assert_eq!(id.len(), 36, "{id:?}");
        assert_eq!(short_boot_id(), short(&id));
    }
}
