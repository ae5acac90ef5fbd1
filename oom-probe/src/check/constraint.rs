//! What `check` says about `constraint` and `oom_memcg` on this node: how
//! they are learnt, and when they are unknown (null, never `global` by
//! default): no decision hook and no memcg offsets in the BTF, or no
//! decision hook and a memory cgroup deeper than the eBPF walk reaches.

use std::path::Path;

use oom_probe_common::{feature, MEMCG_WALK_LEVELS};

use super::{FieldQuality, NodeFacts, Quality};

/// How far below the root a victim's memcg can be for the eBPF walk to
/// reach the root: the walk visits [`MEMCG_WALK_LEVELS`] memcgs, the
/// victim's own and the root included.
pub const DEEPEST_WALKED: usize = MEMCG_WALK_LEVELS - 1;

/// The `constraint` and `oom_memcg` rows of the field report.
pub fn constraint_fields(facts: &NodeFacts) -> Vec<FieldQuality> {
    if let Some(hook) = &facts.decision_hook {
        let why = format!("the kernel's OOM decision, via {hook}");
        return vec![
            FieldQuality {
                field: "constraint (cpuset and mempolicy told apart)",
                quality: Quality::Exact,
                why: format!(
                    "{why}; null only in a userspace_kill (a kill whose decision record was \
                     lost is judged from the page counters, as without the hook)"
                ),
            },
            FieldQuality {
                field: "oom_memcg",
                quality: Quality::Exact,
                why: format!("{why}, at any depth; null for a global OOM"),
            },
        ];
    }
    let no_hook = "no decision hook (fentry and kprobe on oom_kill_process unavailable)";
    if facts.features & feature::MEMCG == 0 {
        let why = format!(
            "{no_hook}, and this kernel's BTF lacks the memory cgroup offsets: always null \
             (unknown), never global by default"
        );
        return vec![
            FieldQuality {
                field: "constraint, constraint_source",
                quality: Quality::Unavailable,
                why: why.clone(),
            },
            FieldQuality {
                field: "oom_memcg",
                quality: Quality::Unavailable,
                why,
            },
        ];
    }
    let depth = match facts.memcg_depth {
        Some(depth) if depth > DEEPEST_WALKED => format!(
            "; this node has memory cgroups {depth} levels below the root, deeper than that: \
             a kill there without a memcg at its limit in reach has constraint null"
        ),
        Some(depth) => format!(
            "; the deepest memory cgroup here is {depth} level(s) below the root, within reach"
        ),
        None => String::new(),
    };
    vec![
        FieldQuality {
            field: "constraint, constraint_source=page_counters",
            quality: Quality::Inferred,
            why: format!(
                "{no_hook}: memcg when a memcg's page counter, from the victim's up to \
                 {MEMCG_WALK_LEVELS} levels, stood at its limit; global when none did and the \
                 walk reached the root; unknown (null, never global by default) when none did \
                 and the victim's memcg is more than {DEEPEST_WALKED} levels below the \
                 root{depth}"
            ),
        },
        FieldQuality {
            field: "constraint cpuset/mempolicy",
            quality: Quality::Unavailable,
            why: format!("{no_hook}: such OOMs are reported as global"),
        },
        FieldQuality {
            field: "oom_memcg",
            quality: Quality::Inferred,
            why: format!(
                "{no_hook}: the lowest memcg at its limit within {MEMCG_WALK_LEVELS} levels; \
                 null for a global OOM and where constraint is unknown"
            ),
        },
    ]
}

/// How many levels below `root` its deepest cgroup directory is (0: no
/// child); stops looking past [`DEEPEST_WALKED`] + 1. `None` when `root`
/// cannot be read.
pub fn deepest_cgroup(root: &Path) -> Option<usize> {
    fn below(dir: &Path, depth: usize) -> usize {
        if depth > DEEPEST_WALKED {
            return depth;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return depth;
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| below(&e.path(), depth + 1))
            .max()
            .unwrap_or(depth)
    }
    std::fs::read_dir(root).ok()?;
    Some(below(root, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(decision_hook: Option<&str>, features: u32, depth: Option<usize>) -> NodeFacts {
        NodeFacts {
            features,
            decision_hook: decision_hook.map(String::from),
            memcg_depth: depth,
            ..NodeFacts::default()
        }
    }

    fn row<'a>(rows: &'a [FieldQuality], field: &str) -> &'a FieldQuality {
        rows.iter()
            .find(|r| r.field.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {rows:#?}"))
    }

    #[test]
    fn a_decision_hook_gives_the_kernels_own_constraint_at_any_depth() {
        let rows = constraint_fields(&facts(Some("kprobe oom_kill_process"), 0, Some(70)));
        let constraint = row(&rows, "constraint");
        assert_eq!(constraint.quality, Quality::Exact);
        assert!(
            constraint
                .why
                .starts_with("the kernel's OOM decision, via kprobe oom_kill_process; null only"),
            "{}",
            constraint.why
        );
        assert_eq!(row(&rows, "oom_memcg").quality, Quality::Exact);
        assert!(row(&rows, "oom_memcg").why.contains("at any depth"));
    }

    #[test]
    fn without_a_hook_or_memcg_offsets_constraint_is_always_unknown() {
        let rows = constraint_fields(&facts(None, !feature::MEMCG, Some(3)));
        for field in ["constraint", "oom_memcg"] {
            let r = row(&rows, field);
            assert_eq!(r.quality, Quality::Unavailable, "{field}");
            assert_eq!(
                r.why,
                "no decision hook (fentry and kprobe on oom_kill_process unavailable), and \
                 this kernel's BTF lacks the memory cgroup offsets: always null (unknown), \
                 never global by default"
            );
        }
    }

    #[test]
    fn without_a_hook_the_depth_of_this_node_says_whether_unknown_can_happen() {
        let shallow = constraint_fields(&facts(None, !0, Some(5)));
        let constraint = row(&shallow, "constraint,");
        assert_eq!(constraint.quality, Quality::Inferred);
        assert!(
            constraint.why.contains(
                "unknown (null, never global by default) when none did and the victim's \
                 memcg is more than 63 levels below the root; the deepest memory cgroup here \
                 is 5 level(s) below the root, within reach"
            ),
            "{}",
            constraint.why
        );
        assert_eq!(
            row(&shallow, "constraint cpuset").quality,
            Quality::Unavailable
        );
        assert_eq!(row(&shallow, "oom_memcg").quality, Quality::Inferred);
        let deep = constraint_fields(&facts(None, !0, Some(64)));
        assert!(
            row(&deep, "constraint,").why.ends_with(
                "this node has memory cgroups 64 levels below the root, deeper than that: a \
                 kill there without a memcg at its limit in reach has constraint null"
            ),
            "{}",
            row(&deep, "constraint,").why
        );
        let unknown_depth = constraint_fields(&facts(None, !0, None));
        assert!(row(&unknown_depth, "constraint,")
            .why
            .ends_with("more than 63 levels below the root"));
    }

    #[test]
    fn the_deepest_cgroup_is_counted_from_the_root_and_bounded() {
        let root = std::env::temp_dir().join(format!("oom-probe-depth-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::write(root.join("a/b/memory.max"), "max").unwrap();
        assert_eq!(deepest_cgroup(&root), Some(3));
        let deep: std::path::PathBuf = (0..70).map(|_| "d").collect();
        std::fs::create_dir_all(root.join(&deep)).unwrap();
        assert_eq!(
            deepest_cgroup(&root),
            Some(DEEPEST_WALKED + 1),
            "stops looking"
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(deepest_cgroup(&root), None);
    }
}
