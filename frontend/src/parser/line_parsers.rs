//! Per-instruction argument parsing (BuildKit's `line_parsers.go` / `split_command.go`).

use super::{Args, Directives, KeyValue, Node};

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

fn split_ws(s: &str) -> Vec<String> {
    s.split(is_ws)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at the first run of whitespace (`reWhitespace.Split(s, 2)`).
fn split_ws2(s: &str) -> (&str, Option<&str>) {
    match s.find(is_ws) {
        Some(i) => (&s[..i], Some(s[i..].trim_start_matches(is_ws))),
        None => (s, None),
    }
}

/// Builds a node from one logical line: keyword, flags, then the keyword's argument parser.
pub(crate) fn node_from_line(
    line: &str,
    d: &Directives,
    comments: Vec<String>,
) -> Result<Node, String> {
    let (keyword, flags, rest) = split_command(line, d);
    let (args, json) = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(&rest)?,
        "arg" => (words_or_none(parse_words(&rest, d.escape)), false),
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(&rest)?,
        "env" => (parse_name_val(&rest, "ENV", d.escape)?, false),
        "label" => (parse_name_val(&rest, "LABEL", d.escape)?, false),
        "expose" | "from" => (words_or_none(split_ws(&rest)), false),
        "healthcheck" => parse_health(&rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                (Args::None, false)
            } else {
                (Args::Words(vec![rest.clone()]), false)
            }
        }
        "onbuild" => {
            if rest.is_empty() {
                (Args::None, false)
            } else {
                let sub = node_from_line(&rest, d, Vec::new())?;
                (Args::Sub(Box::new(sub)), false)
            }
        }
        _ => (Args::None, false),
    };
    Ok(Node {
        keyword,
        flags,
        args,
        json,
        original: line.to_string(),
        heredocs: Vec::new(),
        comments,
        start_line: 0,
        end_line: 0,
        span: 0..0,
    })
}

fn words_or_none(w: Vec<String>) -> Args {
    if w.is_empty() {
        Args::None
    } else {
        Args::Words(w)
    }
}

/// Keyword, leading `--flags`, and the rest of the line (trimmed).
fn split_command(line: &str, d: &Directives) -> (String, Vec<String>, String) {
    let (cmd, rest) = split_ws2(line.trim());
    match rest {
        Some(rest) => {
            let (rest, flags) = extract_builder_flags(rest, d.escape);
            (cmd.to_string(), flags, rest.trim().to_string())
        }
        None => (cmd.to_string(), Vec::new(), String::new()),
    }
}

/// Collects the leading words that start with `--` (quotes removed, escapes applied);
/// a lone `--` ends them. Returns the remaining text and the flags.
fn extract_builder_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            let (pos, ch) = chars[i];
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            let next_dash = chars.get(i + 1).map(|c| c.1) == Some('-');
            if ch != '-' || !next_dash {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        let (pos, mut ch) = chars[i];
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                i += 1;
                continue;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                i += 1;
                ch = chars[i].1;
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // in quotes
        if ch == quote {
            phase = Phase::Word;
            i += 1;
            continue;
        }
        if ch == escape {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            ch = chars[i].1;
        }
        word.push(ch);
        i += 1;
    }
    ("", words)
}

/// Splits into words on whitespace, keeping quotes and escapes (removed later by the shell
/// lexer), as BuildKit's `parseWords`.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        let mut ch = chars[i];
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // in quotes
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// ENV / LABEL: `k=v k2=v2` or the legacy `k some value`.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Args::None);
    }
    if !words[0].contains('=') {
        let (k, v) = split_ws2(rest);
        return match v {
            Some(v) => Ok(Args::KeyValues(vec![KeyValue {
                key: k.to_string(),
                value: v.to_string(),
                sep: String::new(),
            }])),
            None => Err(format!("{key} must have two arguments")),
        };
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                super::go_quote(&w)
            ));
        };
        out.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
            sep: "=".into(),
        });
    }
    Ok(Args::KeyValues(out))
}

enum JsonErr {
    NotArray,
    NotStrings,
}

fn parse_json(rest: &str) -> Result<Vec<String>, JsonErr> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Err(JsonErr::NotArray);
    }
    let v: serde_json::Value = serde_json::from_str(rest).map_err(|_| JsonErr::NotArray)?;
    let serde_json::Value::Array(items) = v else {
        return Err(JsonErr::NotArray);
    };
    items
        .into_iter()
        .map(|i| match i {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(JsonErr::NotStrings),
        })
        .collect()
}

/// RUN/CMD/ENTRYPOINT/SHELL: a JSON array, else the whole rest as one string.
fn parse_maybe_json(rest: &str) -> Result<(Args, bool), String> {
    if rest.is_empty() {
        return Ok((Args::None, false));
    }
    match parse_json(rest) {
        Ok(w) => Ok((words_or_none(w), true)),
        Err(JsonErr::NotStrings) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonErr::NotArray) => Ok((Args::Words(vec![rest.to_string()]), false)),
    }
}

/// ADD/COPY/VOLUME: a JSON array, else whitespace-separated words.
fn parse_maybe_json_to_list(rest: &str) -> Result<(Args, bool), String> {
    match parse_json(rest) {
        Ok(w) => Ok((words_or_none(w), true)),
        Err(JsonErr::NotStrings) => Err(NOT_STRING_ARRAY.into()),
        Err(JsonErr::NotArray) => Ok((words_or_none(split_ws(rest)), false)),
    }
}

/// HEALTHCHECK: the type word (`CMD`, `NONE`), then like RUN.
fn parse_health(rest: &str) -> Result<(Args, bool), String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Args::None, false));
    }
    let typ = rest[..sep].to_string();
    let (cmd, json) = parse_maybe_json(rest[sep..].trim_start())?;
    let mut words = vec![typ];
    if let Args::Words(w) = cmd {
        words.extend(w);
    }
    Ok((Args::Words(words), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_stop_at_first_non_flag_and_double_dash() {
        let (rest, f) = extract_builder_flags("--a=1 --b=\"x y\" src dst", '\\');
        assert_eq!(f, vec!["--a=1", "--b=x y"]);
        assert_eq!(rest, "src dst");
        let (rest, f) = extract_builder_flags("--a -- --b", '\\');
        assert_eq!(f, vec!["--a"]);
        assert_eq!(rest.trim(), "--b");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words(r#"abc="123 456" def"#, '\\'),
            vec![r#"abc="123 456""#, "def"]
        );
        assert_eq!(parse_words(r"a\ b c", '\\'), vec![r"a\ b", "c"]);
    }
}
