//! /proc/self/mountinfo (the host's or a container's): where the cgroup
//! hierarchies are, and which mounts lie under a directory.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use oom_probe_cgroupfs::mountinfo::{self, Hierarchies, MountLine};

fuzz_target!(|text: &str| {
    let hierarchies = Hierarchies::from_mountinfo(text);
    let _ = hierarchies.mode();
    let _ = hierarchies.memory_root();
    for line in text.lines() {
        if let Some(mount) = MountLine::parse(line) {
            let _ = mount.has_option("memory");
        }
    }
    let _ = mountinfo::cgroup_mount_points(text);
    let _ = mountinfo::mount_points_under(text, Path::new("/sys/fs/cgroup"));
});
