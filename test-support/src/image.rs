//! Builds one stage of the project's Dockerfile into an OCI image archive,
//! with no Docker daemon and no registry: the instructions a `FROM scratch`
//! stage of this Dockerfile holds (`FROM` scratch or an earlier stage, `ARG`,
//! `LABEL key="value" ...`, `COPY` of one file from the context, `ENTRYPOINT`
//! and `CMD` in JSON form)
//! done the way Docker does them. Any other instruction, or a `COPY` flag, is an
//! error naming it, so a Dockerfile change the test cannot follow fails the
//! test instead of building something else.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// An image built from a stage: its files and its OCI image config.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// (path inside the image without the leading `/`, bytes, mode).
    pub files: Vec<(PathBuf, Vec<u8>, u32)>,
    /// The OCI image config's `config` object (`Entrypoint`, `Cmd`...).
    pub config: Map<String, Value>,
}

impl Image {
    /// Writes the image as an OCI layout archive named `name`, for
    /// [`crate::containerd::Containerd::import_archive`].
    pub fn write_archive(&self, archive: &Path, name: &str) -> Result<()> {
        crate::containerd::write_oci_archive(
            archive,
            name,
            &self.files,
            Value::Object(self.config.clone()),
        )
    }
}

/// One instruction: its keyword (upper case) and the rest of the line.
type Instruction = (String, String);

/// Builds stage `target` of `dockerfile` with `context` as the build
/// context and `build_args` as `--build-arg`s.
pub fn build_stage(
    dockerfile: &Path,
    context: &Path,
    target: &str,
    build_args: &[(&str, &str)],
) -> Result<Image> {
    let text =
        fs::read_to_string(dockerfile).with_context(|| format!("read {}", dockerfile.display()))?;
    let instructions = parse(&text);
    // Global ARGs (before the first FROM) and the stages, in order.
    let mut stages: Vec<(Option<String>, String, Vec<Instruction>)> = Vec::new();
    for (keyword, rest) in instructions {
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (base, name) = match words.as_slice() {
                [base] => (base.to_string(), None),
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (base.to_string(), Some(name.to_lowercase()))
                }
                _ => bail!("FROM {rest}: not understood"),
            };
            stages.push((name, base, Vec::new()));
        } else if let Some((_, _, body)) = stages.last_mut() {
            body.push((keyword, rest));
        } else if keyword != "ARG" {
            bail!("{keyword} before the first FROM");
        }
    }
    let index = stages
        .iter()
        .position(|(name, _, _)| name.as_deref() == Some(target))
        .with_context(|| format!("no stage {target} in {}", dockerfile.display()))?;
    build(&stages, index, context, build_args)
}

fn build(
    stages: &[(Option<String>, String, Vec<Instruction>)],
    index: usize,
    context: &Path,
    build_args: &[(&str, &str)],
) -> Result<Image> {
    let (_, base, body) = &stages[index];
    let mut image = if base == "scratch" {
        Image::default()
    } else if let Some(earlier) = stages[..index]
        .iter()
        .position(|(name, _, _)| name.as_deref() == Some(base.as_str()))
    {
        build(stages, earlier, context, build_args)?
    } else {
        bail!("FROM {base}: only scratch or an earlier stage can be built without a registry");
    };
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for (keyword, rest) in body {
        match keyword.as_str() {
            "ARG" => {
                let (name, default) = rest
                    .split_once('=')
                    .map_or((rest.trim(), None), |(n, d)| (n.trim(), Some(d.trim())));
                let value = build_args
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
                    .or_else(|| default.map(|d| unquote(d).to_string()))
                    .unwrap_or_default();
                args.insert(name.to_string(), value);
            }
            "COPY" => {
                let rest = substitute(rest, &args);
                let words: Vec<&str> = rest.split_whitespace().collect();
                if words.iter().any(|w| w.starts_with("--")) {
                    bail!("COPY {rest}: flags (--from, --chmod...) are not built here");
                }
                let [source, destination] = words.as_slice() else {
                    bail!("COPY {rest}: one source and one destination expected");
                };
                let source = context.join(source);
                let bytes = fs::read(&source)
                    .with_context(|| format!("COPY: read {}", source.display()))?;
                let mode = fs::metadata(&source)?.permissions().mode() & 0o7777;
                let inside = PathBuf::from(destination.trim_start_matches('/'));
                image.files.retain(|(path, _, _)| path != &inside);
                image.files.push((inside, bytes, mode));
            }
            "LABEL" => {
                let labels = image
                    .config
                    .entry("Labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                for (key, value) in label_pairs(&substitute(rest, &args))? {
                    labels[key.as_str()] = Value::String(value);
                }
            }
            "ENTRYPOINT" | "CMD" => {
                let value: Value = serde_json::from_str(rest)
                    .with_context(|| format!("{keyword} {rest}: only the JSON form is built"))?;
                let key = if keyword == "CMD" {
                    "Cmd"
                } else {
                    "Entrypoint"
                };
                image.config.insert(key.into(), value);
            }
            other => bail!("{other} {rest}: not an instruction this builder does"),
        }
    }
    Ok(image)
}

/// The instructions, with comments and blank lines gone and `\` line
/// continuations joined.
fn parse(text: &str) -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let line = std::mem::take(&mut current);
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        instructions.push((keyword.to_uppercase(), rest.trim().to_string()));
    }
    instructions
}

/// The `key=value` pairs of a `LABEL` line; a value may be in double quotes
/// (with spaces, and `\"` for a quote).
fn label_pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut key = String::new();
        let mut equals = false;
        for c in chars.by_ref() {
            if c == '=' {
                equals = true;
                break;
            }
            key.push(c);
        }
        if !equals || key.is_empty() || key.contains(char::is_whitespace) {
            bail!("LABEL {text}: only key=value pairs are built");
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => bail!("LABEL {text}: unterminated quote"),
                }
            }
        } else {
            value.extend(chars.by_ref().take_while(|c| !c.is_whitespace()));
        }
        pairs.push((key, value));
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    }
    Ok(pairs)
}

/// `$NAME` and `${NAME}` replaced by the stage's ARG values.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (name, value) in args {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_pairs_take_quoted_and_bare_values() {
        let pairs = label_pairs(r#"a.b="x y" c=z  d="q\"uote" e="""#).unwrap();
        let expected = [("a.b", "x y"), ("c", "z"), ("d", "q\"uote"), ("e", "")];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(label_pairs("novalue").is_err());
        assert!(label_pairs(r#"a="open"#).is_err());
    }
}
