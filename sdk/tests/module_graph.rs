//! No import cycles between the modules of the SDK and of the operator.
//!
//! The test reads the crates' sources (no compiler help: a small tokenizer),
//! collects every path that starts with `crate::`, `super::` or `self::` in
//! code (comments, doc links and `#[cfg(test)]` modules are left out),
//! resolves it to the module that defines the item (following `use`
//! re-exports, so `super::Member` from a sibling counts as a reference to
//! `member`), and builds two kinds of graphs:
//!
//! * between the top-level modules of a crate (`handoff`, `driver`,
//!   `progress`, ...);
//! * between the direct submodules of a few parents (the SDK's
//!   `server::session`, `handoff`, `driver` and `store`; the operator's
//!   `plan`): `service` and `member` of `server::session`, say.
//!
//! A parent and its own children are not an edge: a `mod.rs` declares and
//! re-exports its children, and children use the parent's shared types.
//! Items defined in the crate root (`lib.rs`) are not a node either. A cycle
//! fails the test with its modules in order.
//!
//! The walk takes whatever files are there: modules that move to another
//! crate simply drop out of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path from the crate root, e.g. `["server", "session", "member"]`.
type ModPath = Vec<String>;

/// One parsed source file.
struct Module {
    /// `crate::...` paths referenced in the file's code, absolute.
    references: Vec<ModPath>,
    /// Names bound by the file's `use` items, to their absolute paths.
    bindings: BTreeMap<String, ModPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Semi,
    Other,
}

/// The code of a file without comments, string and character literals.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && raw_string_end(&chars, i).is_some()
        {
            i = raw_string_end(&chars, i).unwrap_or(chars.len());
            out.push(Token::Other);
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if c == '\'' {
            // A character literal ('x', '\n', '{') or a lifetime ('a).
            if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else {
                i += 1;
            }
            out.push(Token::Other);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            i += 1;
            out.push(match c {
                ':' if next == Some(':') => {
                    i += 1;
                    Token::PathSep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                '*' => Token::Star,
                ';' => Token::Semi,
                c if c.is_whitespace() => continue,
                _ => Token::Other,
            });
        }
    }
    out
}

/// Where the raw string literal starting at `i` (`r"..."`, `r#"..."#`) ends.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// `tokens` without the items under `#[cfg(test)]` (the `tests` modules).
fn without_tests(tokens: &[Token]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_cfg_test = tokens.get(i..i + 3).is_some_and(|t| {
            t[0] == Token::Ident("cfg".into())
                && t[1] == Token::Other
                && t[2] == Token::Ident("test".into())
        });
        if !is_cfg_test {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        // Skip to the item's end: its `;`, or its braces closed.
        let mut depth = 0;
        while i < tokens.len() {
            match tokens[i] {
                Token::Open => depth += 1,
                Token::Close => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Token::Semi if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// Reads a path tree at `tokens[i..]` (after its first segment and `::`),
/// pushing each leaf: `a::b`, `a::{b, c::d}`, `a::{self, b}`, `a::b as c`.
/// Returns the index after the tree.
fn path_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: &mut Vec<String>,
    leaves: &mut Vec<(ModPath, Option<String>)>,
) -> usize {
    let depth = prefix.len();
    loop {
        match tokens.get(i) {
            Some(Token::Ident(name)) if name == "self" && depth > 0 => {
                leaves.push((prefix.clone(), None));
                i += 1;
                break;
            }
            Some(Token::Ident(name)) => {
                prefix.push(name.clone());
                i += 1;
                if tokens.get(i) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                let alias = match (tokens.get(i), tokens.get(i + 1)) {
                    (Some(Token::Ident(kw)), Some(Token::Ident(alias))) if kw == "as" => {
                        i += 2;
                        Some(alias.clone())
                    }
                    _ => None,
                };
                leaves.push((prefix.clone(), alias));
                break;
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Token::Comma) => i += 1,
                        Some(_) => {
                            let mut inner = prefix.clone();
                            i = path_tree(tokens, i, &mut inner, leaves);
                        }
                        None => break,
                    }
                }
                break;
            }
            _ => {
                // `*`, or a path ending in `::<` (turbofish) and the like.
                if tokens.get(i) == Some(&Token::Star) {
                    i += 1;
                }
                break;
            }
        }
    }
    prefix.truncate(depth);
    i
}

/// `self`, `super` and `crate` at the start of `relative`, made absolute
/// from module `at`.
fn absolute(at: &[String], relative: &[String]) -> ModPath {
    let mut base: ModPath = at.to_vec();
    let mut rest = relative;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        _ => {}
    }
    base.extend(rest.iter().cloned());
    base
}

fn parse(at: &[String], source: &str) -> Module {
    let tokens = without_tests(&tokens(source));
    let mut module = Module {
        references: Vec::new(),
        bindings: BTreeMap::new(),
    };
    let mut i = 0;
    while i < tokens.len() {
        let in_use = i > 0 && tokens[i - 1] == Token::Ident("use".into());
        let starts = match &tokens[i] {
            Token::Ident(name) => {
                matches!(name.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || tokens[i - 1] != Token::PathSep)
            }
            Token::Open => in_use,
            _ => false,
        };
        if !starts {
            i += 1;
            continue;
        }
        let mut leaves = Vec::new();
        let end = path_tree(&tokens, i, &mut Vec::new(), &mut leaves);
        for (path, alias) in leaves {
            // In a `use`, a path not starting with crate/self/super is
            // an external crate (edition 2018+): nothing to record.
            if !matches!(path[0].as_str(), "crate" | "super" | "self") {
                continue;
            }
            let full = absolute(at, &path);
            if in_use && let Some(name) = alias.or_else(|| full.last().cloned()) {
                module.bindings.insert(name, full.clone());
            }
            module.references.push(full);
        }
        i = end.max(i + 1);
    }
    module
}

/// The modules of the crate whose sources are in `src`, by module path.
fn read_crate(src: &Path) -> BTreeMap<ModPath, Module> {
    let mut modules = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    pending.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap_or(&path);
            let mut segments: ModPath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
                segments.pop();
            }
            if segments == ["main"] {
                continue;
            }
            let Ok(source) = fs::read_to_string(&path) else {
                continue;
            };
            let module = parse(&segments, &source);
            modules.insert(segments, module);
        }
    }
    modules
}

/// The module that defines the item at `path`: the longest module prefix,
/// following that module's `use` bindings for the next segment.
fn resolve(modules: &BTreeMap<ModPath, Module>, path: &[String], hops: usize) -> ModPath {
    let mut len = path.len();
    while len > 0 && !modules.contains_key(&path[..len]) {
        len -= 1;
    }
    let owner = path[..len].to_vec();
    if hops < 8
        && let Some(name) = path.get(len)
        && let Some(target) = modules.get(&owner).and_then(|m| m.bindings.get(name))
    {
        let mut next = target.clone();
        next.extend(path[len + 1..].iter().cloned());
        return resolve(modules, &next, hops + 1);
    }
    owner
}

/// The graphs of one crate: for each group (`""` for the top level, else a
/// parent module), its edges.
fn graphs(
    modules: &BTreeMap<ModPath, Module>,
    parents: &[&[&str]],
) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (at, module) in modules {
        for reference in &module.references {
            let target = resolve(modules, reference, 0);
            // Top level.
            if let (Some(from), Some(to)) = (at.first(), target.first())
                && from != to
            {
                out.entry(String::new())
                    .or_default()
                    .entry(from.clone())
                    .or_default()
                    .insert(to.clone());
            }
            // Siblings under a parent.
            for parent in parents {
                let n = parent.len();
                let under =
                    |p: &ModPath| p.len() > n && p.iter().zip(parent.iter()).all(|(a, b)| a == b);
                if under(at) && under(&target) && at[n] != target[n] {
                    out.entry(parent.join("::"))
                        .or_default()
                        .entry(at[n].clone())
                        .or_default()
                        .insert(target[n].clone());
                }
            }
        }
    }
    out
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node.as_str())
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// The modules reachable from `node` (itself included).
fn reach(node: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::from([node.to_owned()]);
    let mut pending = vec![node.to_owned()];
    while let Some(at) = pending.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if seen.insert(next.clone()) {
                pending.push(next.clone());
            }
        }
    }
    seen
}

/// Every cycle found in `src`: one line per set of modules that reach each
/// other, with one cycle through them.
fn cycles(src: &Path, parents: &[&[&str]]) -> Vec<String> {
    let modules = read_crate(src);
    assert!(modules.len() > 1, "no sources under {}", src.display());
    let mut found = Vec::new();
    for (group, edges) in graphs(&modules, parents) {
        let prefix = if group.is_empty() {
            String::new()
        } else {
            format!("{group}::")
        };
        let reaches: BTreeMap<&String, BTreeSet<String>> =
            edges.keys().map(|n| (n, reach(n, &edges))).collect();
        let mut done = BTreeSet::new();
        for (node, from_node) in &reaches {
            if done.contains(*node) {
                continue;
            }
            let component: BTreeSet<String> = from_node
                .iter()
                .filter(|other| reaches.get(other).is_some_and(|r| r.contains(*node)))
                .cloned()
                .collect();
            if component.len() < 2 {
                continue;
            }
            let inside: BTreeMap<String, BTreeSet<String>> = component
                .iter()
                .map(|n| {
                    let next = edges.get(n).into_iter().flatten();
                    let next = next.filter(|m| component.contains(*m)).cloned().collect();
                    (n.clone(), next)
                })
                .collect();
            let cycle = find_cycle(&inside).unwrap_or_default();
            let named: Vec<String> = cycle.iter().map(|m| format!("{prefix}{m}")).collect();
            let members: Vec<String> = component.iter().map(|m| format!("{prefix}{m}")).collect();
            let arrows: Vec<String> = inside
                .iter()
                .flat_map(|(from, to)| to.iter().map(move |to| format!("{from} -> {to}")))
                .collect();
            found.push(format!(
                "{}: {{{}}}, e.g. {} (edges: {})",
                src.display(),
                members.join(", "),
                named.join(" -> "),
                arrows.join(", ")
            ));
            done.extend(component);
        }
    }
    found
}

fn sources(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[test]
fn the_sdk_has_no_import_cycles() {
    let parents: &[&[&str]] = &[
        &["server", "session"],
        &["handoff"],
        &["driver"],
        &["store"],
    ];
    let found = cycles(&sources("src"), parents);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_operator_has_no_import_cycles() {
    let src = sources("../operator/src");
    if !src.exists() {
        return;
    }
    let found = cycles(&src, &[&["plan"]]);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_contract_has_no_import_cycles() {
    let src = sources("../contract/src");
    if !src.exists() {
        return;
    }
    let found = cycles(&src, &[&["ring"], &["crd"]]);
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_through_re_exports() {
    let dir = std::env::temp_dir().join(format!("locus-module-graph-{}", std::process::id()));
    let session = dir.join("server/session");
    fs::create_dir_all(&session).unwrap();
    let files = [
        ("lib.rs", "pub mod server; pub mod progress;"),
        ("server/mod.rs", "pub mod session;"),
        (
            "server/session/mod.rs",
            "mod member; mod service;\npub use self::member::Member;\npub use self::service::Layer;",
        ),
        (
            "server/session/member.rs",
            "use super::Layer; // crate::progress::Nothing in a comment\npub struct Member;",
        ),
        (
            "server/session/service.rs",
            "pub struct Layer(super::Member);\n#[cfg(test)]\nmod tests { use crate::progress::X; }",
        ),
        (
            "progress.rs",
            "use crate::server::session::{Member as M};\nconst S: &str = \"crate::server\";",
        ),
    ];
    for (path, text) in files {
        fs::write(dir.join(path), text).unwrap();
    }
    let found = cycles(&dir, &[&["server", "session"]]);
    fs::remove_dir_all(&dir).ok();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("{server::session::member, server::session::service}"),
        "{found:?}"
    );
}
