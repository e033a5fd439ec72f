//! The file line of a dotted key path in YAML text, so an error names where its key is set.

/// The 1-based line where the block-style YAML key path is set, if it is. The path is
/// dotted (`a.b.c`); a segment may be quoted (`typeMap."user.human.added"`) and may end in
/// a sequence index (`rules[2].name`). An index that cannot be found (a flow-style list)
/// gives the line of its key.
pub(super) fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut min_indent = 0;
    let mut found = None;
    for (name, index) in key_segments(dotted) {
        let (line, indent) = find_key(&lines, start, min_indent, &name)?;
        found = Some(line);
        start = line + 1;
        min_indent = indent + 1;
        if let Some(n) = index {
            let Some((item, item_indent)) = find_item(&lines, line + 1, indent, n) else {
                break;
            };
            found = Some(item);
            // The item's first key is on the item's own line, after `- `.
            start = item;
            min_indent = item_indent + 1;
        }
    }
    found.map(|line| line + 1)
}

/// `a."b.c"[2].d` → `[("a", None), ("b.c", Some(2)), ("d", None)]`.
fn key_segments(dotted: &str) -> Vec<(String, Option<usize>)> {
    let mut out = Vec::new();
    let mut chars = dotted.chars().peekable();
    loop {
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => name.extend(chars.next()),
                    c => name.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == '.' || c == '[' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut index = None;
        while chars.peek() == Some(&'[') {
            chars.next();
            let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
            index = digits.parse().ok();
        }
        out.push((name, index));
        if chars.next() != Some('.') {
            return out;
        }
    }
}

/// A line's indent and content; a sequence item's `- ` counts as indentation.
fn split_indent(line: &str) -> (usize, &str) {
    let content = line.trim_start();
    let indent = line.len() - content.len();
    match content.strip_prefix("- ") {
        Some(rest) => {
            let rest_trimmed = rest.trim_start();
            (line.len() - rest_trimmed.len(), rest_trimmed)
        }
        None => (indent, content),
    }
}

/// The first line from `start` setting `name` at an indent of at least `min_indent`.
fn find_key(lines: &[&str], start: usize, min_indent: usize, name: &str) -> Option<(usize, usize)> {
    lines
        .iter()
        .enumerate()
        .skip(start)
        .find_map(|(index, line)| {
            let (indent, content) = split_indent(line);
            if content.is_empty() || content.starts_with('#') || indent < min_indent {
                return None;
            }
            let (key, _) = content.split_once(':')?;
            let key = key.trim();
            let key = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
                .unwrap_or(key);
            (key == name).then_some((index, indent))
        })
}

/// The line of item `n` of the block sequence under a key indented `key_indent`, with the
/// indent of its `-`.
fn find_item(lines: &[&str], from: usize, key_indent: usize, n: usize) -> Option<(usize, usize)> {
    let mut item_indent = None;
    let mut count = 0;
    for (index, line) in lines.iter().enumerate().skip(from) {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let is_item = content == "-" || content.starts_with("- ");
        if is_item && item_indent.is_none() && indent >= key_indent {
            item_indent = Some(indent);
        }
        if is_item && item_indent == Some(indent) {
            if count == n {
                return Some((index, indent));
            }
            count += 1;
        } else if indent <= key_indent {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys() {
        let text = "server:\n  listen: x\nredis:\n  # c\n  sentinel:\n    nodes: []\n";
        assert_eq!(locate_key(text, "redis.sentinel.nodes"), Some(6));
        assert_eq!(locate_key(text, "server.listen"), Some(2));
        assert_eq!(locate_key(text, "redis.host"), None);
    }

    #[test]
    fn locates_sequence_items_and_quoted_keys() {
        let text = "events:\n  routing:\n    - match: a\n      priority: high\n    - match: b\n      priority: urgent\n  zitadel:\n    typeMap:\n      user.human.added: user.created\n      \"org.added\": org.created\n  types: [a, b]\nlist:\n- x: 1\n- x: 2\n";
        assert_eq!(locate_key(text, "events.routing[0].match"), Some(3));
        assert_eq!(locate_key(text, "events.routing[1]"), Some(5));
        assert_eq!(locate_key(text, "events.routing[1].priority"), Some(6));
        assert_eq!(locate_key(text, "events.routing[2].match"), Some(2));
        assert_eq!(
            locate_key(text, "events.zitadel.typeMap.\"user.human.added\""),
            Some(9)
        );
        assert_eq!(
            locate_key(text, "events.zitadel.typeMap.\"org.added\""),
            Some(10)
        );
        assert_eq!(locate_key(text, "events.types[1]"), Some(11));
        assert_eq!(locate_key(text, "list[1].x"), Some(14));
        assert_eq!(locate_key(text, "events.queues"), None);
    }
}
