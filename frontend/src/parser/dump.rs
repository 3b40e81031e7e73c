//! BuildKit's `Node.Dump()` rendering of the AST, used to compare with BuildKit's own
//! parser test data.

use super::{Args, Dockerfile, Node};

/// Quotes like Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c == '\u{feff}' => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Node {
    /// One instruction as BuildKit dumps it, without the surrounding parentheses.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", flags.join(" ")));
        }
        match &self.args {
            Args::None => {}
            Args::Words(w) => {
                for a in w {
                    s.push(' ');
                    s.push_str(&go_quote(a));
                }
            }
            Args::KeyValues(kvs) => {
                for kv in kvs {
                    for a in [&kv.key, &kv.value, &kv.sep] {
                        s.push(' ');
                        s.push_str(&go_quote(a));
                    }
                }
            }
            Args::Sub(sub) => {
                s.push_str(&format!(" ({})", sub.dump()));
            }
        }
        s.trim().to_string()
    }
}

impl Dockerfile {
    /// The whole file as BuildKit's `ast.Dump()`: one `(…)` line per instruction.
    pub fn dump(&self) -> String {
        self.instructions
            .iter()
            .map(|n| format!("({})\n", n.dump()))
            .collect::<String>()
            .trim()
            .to_string()
    }
}
