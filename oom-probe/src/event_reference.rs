//! The written schema checked against the real one: every field of every
//! event in the golden file (`testdata/events.golden.jsonl`) must have its
//! row in the field reference, `docs/events.md`, and every sample event
//! printed in the README must be an event of the current schema, field for
//! field.
//!
//! The reference's convention, which this test reads: one `## ` section
//! per event type, whose heading names the type in backticks
//! (`` ## `eviction` ``; several types may share a section), and in it one
//! table row per field, whose first cell is the field's dotted path in
//! backticks: `victim.rss_bytes.anon`, `tasks[].pid` (`[]`: every element
//! of an array).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_json::Value;

use crate::event::Event;

const GOLDEN: &str = include_str!("testdata/events.golden.jsonl");

/// A file of the repository, by its path from the repository's root.
fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every key path of a JSON value: `victim`, `victim.rss_bytes`,
/// `victim.rss_bytes.anon`, `tasks`, `tasks[].pid` (the union over an
/// array's elements). A null or empty value has no paths below its own.
fn key_paths(value: &Value) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields {
                    let path = match prefix {
                        "" => key.clone(),
                        _ => format!("{prefix}.{key}"),
                    };
                    out.insert(path.clone());
                    walk(&path, field, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk("", value, &mut out);
    out
}

/// The `## ` sections of the reference: heading -> the field paths of its
/// table rows (a row whose first cell is one code span), in order.
fn documented_fields(markdown: &str) -> BTreeMap<String, Vec<String>> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut heading = String::new();
    for line in markdown.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.to_string();
            sections.entry(heading.clone()).or_default();
            continue;
        }
        let Some(first_cell) = line.strip_prefix('|').and_then(|row| row.split('|').next()) else {
            continue;
        };
        let cell = first_cell.trim();
        let Some(path) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        if path.contains('`') {
            continue;
        }
        sections
            .entry(heading.clone())
            .or_default()
            .push(path.to_string());
    }
    sections
}

/// The fields documented for events of type `ty`: the section whose
/// heading names it in backticks (exactly one). Panics on a field
/// documented twice there.
fn fields_of(sections: &BTreeMap<String, Vec<String>>, ty: &str) -> BTreeSet<String> {
    let named = format!("`{ty}`");
    let found: Vec<_> = sections
        .iter()
        .filter(|(heading, _)| heading.contains(&named))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "docs/events.md needs exactly one `## ` section naming {named}, found {:?}",
        found.iter().map(|(h, _)| h).collect::<Vec<_>>()
    );
    let (heading, rows) = found[0];
    let mut fields = BTreeSet::new();
    for path in rows {
        assert!(
            fields.insert(path.clone()),
            "docs/events.md, section {heading:?}: `{path}` is documented twice"
        );
    }
    fields
}

/// Every JSON value in the README's ```json blocks (a block may hold
/// several objects, each over several lines).
fn readme_samples(markdown: &str) -> Vec<Value> {
    let mut samples = Vec::new();
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        match &mut block {
            None if line.trim_start() == "```json" => block = Some(String::new()),
            None => {}
            Some(text) if line.trim_start() == "```" => {
                for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                    let value = value
                        .unwrap_or_else(|e| panic!("README: a ```json block does not parse: {e}"));
                    samples.push(value);
                }
                block = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    samples
}

#[test]
fn every_golden_field_is_documented_in_the_reference() {
    let sections = documented_fields(&repo_file("docs/events.md"));
    let mut by_type: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in GOLDEN.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let ty = event["type"].as_str().unwrap().to_string();
        by_type.entry(ty).or_default().extend(key_paths(&event));
    }
    assert_eq!(by_type.len(), 6, "one golden line per event type at least");
    let mut missing = Vec::new();
    let mut stray = Vec::new();
    for (ty, paths) in &by_type {
        let documented = fields_of(&sections, ty);
        missing.extend(
            paths
                .difference(&documented)
                .map(|path| format!("{ty}: `{path}`")),
        );
        // A documented field must at least hang off a real top-level one
        // (catches a misspelt or removed field in the reference).
        stray.extend(
            documented
                .iter()
                .filter(|path| {
                    let top = path.split(['.', '[']).next().unwrap_or_default();
                    !paths.contains(top)
                })
                .map(|path| format!("{ty}: `{path}`")),
        );
    }
    assert!(
        missing.is_empty(),
        "fields of the golden events with no row in docs/events.md:\n{}",
        missing.join("\n")
    );
    assert!(
        stray.is_empty(),
        "rows of docs/events.md under no field of the event:\n{}",
        stray.join("\n")
    );
}

#[test]
fn every_readme_sample_event_is_an_event_of_the_current_schema() {
    let samples: Vec<Value> = readme_samples(&repo_file("README.md"))
        .into_iter()
        .filter(|value| value.get("type").is_some())
        .collect();
    assert!(!samples.is_empty(), "README has no sample event");
    for sample in samples {
        let ty = sample["type"].clone();
        let event: Event = serde_json::from_value(sample.clone())
            .unwrap_or_else(|e| panic!("README's {ty} sample is not an event: {e}"));
        // Read leniently (an absent optional field is null), so compare
        // what it prints back: a missing, renamed or extra field shows.
        let printed = serde_json::to_value(&event).unwrap();
        let (want, have) = (key_paths(&printed), key_paths(&sample));
        assert_eq!(
            want.difference(&have).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "README's {ty} sample lacks these fields of the schema"
        );
        assert_eq!(
            have.difference(&want).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "README's {ty} sample has fields the schema does not"
        );
        assert_eq!(
            printed, sample,
            "README's {ty} sample prints back otherwise"
        );
    }
}

#[test]
fn key_paths_name_nested_fields_and_array_elements() {
    let value: Value = serde_json::from_str(
        r#"{"type":"x","victim":{"rss_bytes":{"anon":1}},"tasks":[{"pid":1},{"comm":"a"}],"psi":null,"none":[]}"#,
    )
    .unwrap();
    let paths: Vec<_> = key_paths(&value).into_iter().collect();
    assert_eq!(
        paths,
        [
            "none",
            "psi",
            "tasks",
            "tasks[].comm",
            "tasks[].pid",
            "type",
            "victim",
            "victim.rss_bytes",
            "victim.rss_bytes.anon"
        ]
    );
}

#[test]
fn the_reference_is_read_by_section_and_first_cell() {
    let doc = "## Kills: `oom_kill` and `userspace_kill`\n\
               | field | unit |\n|---|---|\n| `victim.pid` | integer |\n\
               | `tasks[].pid` | `pid` in the second cell |\n| plain | no code span |\n\
               ## `eviction`\n| `message` | string |\n";
    let sections = documented_fields(doc);
    let kills = fields_of(&sections, "userspace_kill");
    assert_eq!(
        kills.iter().collect::<Vec<_>>(),
        ["tasks[].pid", "victim.pid"]
    );
    assert!(fields_of(&sections, "eviction").contains("message"));
}
